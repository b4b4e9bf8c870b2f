"""DALI 1.1 error labels as exceptions: each knows its label (the text's first word) and
its HTTP status. Raise them anywhere in a protocol handler; the application turns them into
DALI error documents (see :mod:`vo_service.protocols.dali`)."""

from __future__ import annotations


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
