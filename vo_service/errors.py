"""Errors every layer may raise, below all of them: the DALI error types, and the
classification of failures of the service's own storage.

DALI 1.1 error labels as exceptions: each knows its label (the text's first word) and its
HTTP status. Raise them anywhere (products, jobs, protocol handlers); the application
turns them into DALI error documents (see :mod:`vo_service.protocols.dali`), a job into
its error summary.

A full, read-only or forbidden state directory is not the client's fault and not a bug:
HTTP answers 503 ``ServiceUnavailable`` with Retry-After, a job ends in ERROR saying
``ServiceUnavailable: … retry later``, and the log gets one line instead of a traceback.
"""

from __future__ import annotations

import errno
import os
import sqlite3


class DALIError(Exception):
    """A client-visible failure: ``label`` starts the error text, ``status`` is the HTTP code."""

    label = "Error"
    status = 500

    def __init__(self, message: str, *, label: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if label is not None:
            self.label = label
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    @property
    def text(self) -> str:
        """``"<label>: <message>"``, the error text the standards ask for."""
        return f"{self.label}: {self.message}"


class UsageError(DALIError):
    """A permanent error in the request (bad syntax, value out of range)."""

    label = "UsageError"
    status = 400


class MultiValuedParamNotSupported(DALIError):
    """A parameter was given several values where this resource accepts one."""

    label = "MultiValuedParamNotSupported"
    status = 400


class NotFound(DALIError):
    """An unknown ID, job or resource (404); DataLink rows use the label ``NotFoundFault``."""

    label = "UsageError"
    status = 404


class AuthenticationError(DALIError):
    """The request needs credentials."""

    label = "AuthenticationError"
    status = 401


class TooLarge(DALIError):
    """The request body or upload exceeds the configured limit (413)."""

    label = "UsageError"
    status = 413


class ServiceUnavailable(DALIError):
    """A transient overload; answered with 503 and ``Retry-After``."""

    label = "ServiceUnavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: int = 10, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("Retry-After", str(int(retry_after)))


# errno values of a failing disk or state directory (full, quota, read-only, permissions, I/O)
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.EIO}
STORAGE_SQLITE_ERRORS = ("database or disk is full", "readonly database", "disk i/o error",
                         "unable to open database file")
# Of those, the ones that freeing space cures.
NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
NO_SPACE_SQLITE_ERROR = "database or disk is full"


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and its causes and contexts, each once."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def storage_failure(exc: BaseException) -> str | None:
    """What went wrong if ``exc`` (or its cause) is a failing disk or state directory."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in STORAGE_ERRNOS:
            return os.strerror(link.errno)
        if isinstance(link, sqlite3.OperationalError) and any(
                text in str(link).lower() for text in STORAGE_SQLITE_ERRORS):
            return str(link)
    return None


def out_of_space(exc: BaseException) -> bool:
    """True if ``exc`` (or its cause) says the disk or the quota is full."""
    return any((isinstance(link, OSError) and link.errno in NO_SPACE_ERRNOS)
               or (isinstance(link, sqlite3.OperationalError)
                   and NO_SPACE_SQLITE_ERROR in str(link).lower())
               for link in _chain(exc))
