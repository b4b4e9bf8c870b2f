"""Failures of the service's own storage, told apart from bugs (below every other layer).

A full, read-only or forbidden state directory is not the client's fault and not a bug:
HTTP answers 503 ``ServiceUnavailable`` with Retry-After, a job ends in ERROR saying
``ServiceUnavailable: … retry later``, and the log gets one line instead of a traceback.
The DALI error types themselves live in :mod:`vo_service.protocols.dali_errors`.
"""

from __future__ import annotations

import errno
import os
import sqlite3

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
