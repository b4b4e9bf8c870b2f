"""DALI 1.1 common ground: parameters, value syntax, error documents, VOTable output.

Every protocol module reads its request with :func:`read_params`, turns values into typed
objects with the ``parse_*`` functions (each raises :class:`UsageError` with a message that
says what to fix) and lets any :class:`DALIError` escape: the application's exception
handler (:func:`dali_exception_handler`) answers it with a DALI error VOTable.
VOTables are built from templates by :mod:`vo_service.votables` (re-exported here).

The exceptions live in :mod:`vo_service.errors` and the value parsers in
:mod:`vo_service.products.parameters`, below the protocols for the layers under them too
(SODA jobs and catalog jobs parse the same values); both are importable from here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from astropy.io.votable.tree import Info, VOTableFile
from astropy.table import Table
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vo_service.errors import (
    AuthenticationError,
    DALIError,
    MultiValuedParamNotSupported,
    NotFound,
    ServiceUnavailable,
    TooLarge,
    UsageError,
    storage_failure,
)
from vo_service.products.parameters import (
    FORMAT_ALIASES,
    VOTABLE_MIME,
    ResponseFormat,
    parse_bool,
    parse_circle,
    parse_float,
    parse_int,
    parse_interval,
    parse_polygon,
    parse_pos,
    parse_range,
    parse_responseformat,
    parse_timestamp,
)
from vo_service.protocols.error_format import PLAIN_ERRORS_KEY
from vo_service.votables import TEMPLATES, fill_rows, load_template, votable_bytes

__all__ = [
    "FORMAT_ALIASES", "TEMPLATES", "VOTABLE_MIME", "AuthenticationError", "DALIError",
    "MultiValuedParamNotSupported", "NotFound", "Params", "ResponseFormat",
    "ServiceUnavailable", "TooLarge", "UploadedFile", "UsageError", "dali_exception_handler",
    "error_response", "error_votable", "fill_rows", "load_template", "parse_bool",
    "parse_circle", "parse_float", "parse_int", "parse_interval", "parse_polygon",
    "parse_pos", "parse_range", "parse_responseformat", "parse_timestamp",
    "public_base_url", "read_params", "request_error_response", "server_error_handler",
    "votable_bytes", "votable_response",
    "StorageFailureMiddleware", "storage_error", "storage_failure",
]

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------
# Errors, parameters and URLs


def public_base_url(request: Request) -> str:
    """The base URL written into VO documents: ``settings.base_url``, else the request's own."""
    settings = getattr(request.app.state, "settings", None)
    configured = getattr(settings, "base_url", None)
    return (configured or str(request.base_url)).rstrip("/")


# ---------------------------------------------------------------------------------------
# VOTable output


def votable_response(votable: VOTableFile | Table, *, status: int = 200,
                     media_type: str = VOTABLE_MIME,
                     headers: dict[str, str] | None = None) -> Response:
    """An HTTP response carrying ``votable`` (see :func:`votable_bytes`)."""
    return Response(votable_bytes(votable), status_code=status, media_type=media_type,
                    headers=headers)


def error_votable(text: str, *, standard_id: str | None = None) -> VOTableFile:
    """The DALI error document: ``QUERY_STATUS=ERROR`` with ``text`` (label first)."""
    votable = load_template("dali_error.xml")
    resource = votable.resources[0]
    resource.infos[0].content = text
    if standard_id:
        resource.infos.insert(0, Info(name="standardID", value=standard_id))
    return votable


def error_response(exc: DALIError, *, standard_id: str | None = None,
                   plain_text: bool = False) -> Response:
    """Answer ``exc`` as a DALI error VOTable (or text/plain when asked) with its status."""
    if plain_text:
        return Response(exc.text + "\n", status_code=exc.status, media_type="text/plain",
                        headers=exc.headers)
    return votable_response(error_votable(exc.text, standard_id=standard_id),
                            status=exc.status, headers=exc.headers)


def request_error_response(request: Request, exc: DALIError) -> Response:
    """``exc`` in the form this request's errors take: text/plain where the endpoint chose
    it (SODA ``/sync``, see :mod:`~vo_service.protocols.error_format`), else the VOTable."""
    return error_response(exc, standard_id=request.scope.get("vo_standard_id"),
                          plain_text=bool(request.scope.get(PLAIN_ERRORS_KEY)))


async def dali_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler: a :class:`DALIError` becomes its DALI error document."""
    assert isinstance(exc, DALIError)
    return request_error_response(request, exc)


# Failures of the service's own storage: not the client's fault and not a bug, but a state
# the operators fix (free space, permissions); clients should retry later.
STORAGE_RETRY_SECONDS = 60


def storage_error(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 answer to ``exc`` if it is a failing disk (full, read-only, no permission)."""
    problem = storage_failure(exc)
    if problem is None:
        return None
    return ServiceUnavailable(
        f"the service cannot write its files ({problem}); the operators have been told, "
        "retry later", retry_after=STORAGE_RETRY_SECONDS)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    """Any other exception is a bug: one log line, a 500 DALI error (Starlette re-raises the
    exception afterwards, so the server logs its traceback once).

    Except a failing disk (see :class:`StorageFailureMiddleware`, which normally answers it
    first): a 503 ServiceUnavailable with Retry-After that names the problem.
    """
    error = storage_error(exc)
    if error is not None:
        log.error("storage failure on %s %s: %s", request.method, request.url.path, exc)
        return request_error_response(request, error)
    log.error("unhandled error on %s %s: %s: %s", request.method, request.url.path,
              type(exc).__name__, exc)
    error = DALIError("internal error; the operators have been told (see the server log)")
    return error_response(error, plain_text=bool(request.scope.get(PLAIN_ERRORS_KEY)))


class StorageFailureMiddleware:
    """Answer a failing disk with 503 ServiceUnavailable + Retry-After and one log line.

    Starlette's outermost middleware answers every other exception with a 500 and then
    re-raises it for the server to log with its traceback; a full or read-only disk is a
    known state of the service, not a bug, so it is answered here and logged once.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception as exc:
            error = storage_error(exc)
            if error is None:
                raise
            log.error("storage failure on %s %s: %s", scope["method"], scope["path"], exc)
            if not started:  # else the client sees a cut-off answer, as on any failure
                response = error_response(error, standard_id=scope.get("vo_standard_id"),
                                          plain_text=bool(scope.get(PLAIN_ERRORS_KEY)))
                await response(scope, receive, send)


# ---------------------------------------------------------------------------------------
# Parameters (DALI 1.1 §3)


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart POST: field name (upper-cased), client filename, bytes."""

    name: str
    field_name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Params:
    """Request parameters: names upper-cased, empty values dropped, values in request order."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]],
                   files: Iterable[UploadedFile] = ()) -> Params:
        """Build from raw (name, value) pairs, applying the DALI name and empty-value rules."""
        kept = [(name.upper(), value) for name, value in pairs if value.strip() != ""]
        return cls(kept, list(files))

    def names(self) -> list[str]:
        """Parameter names present, in first-seen order."""
        return list(dict.fromkeys(name for name, _ in self.pairs))

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (case-insensitive), in request order."""
        wanted = name.upper()
        return [value for key, value in self.pairs if key == wanted]

    def get_single(self, name: str, default: str | None = None) -> str | None:
        """The one value of a single-valued parameter; repeating it is a UsageError."""
        values = self.get_all(name)
        if len(values) > 1:
            raise UsageError(f"{name.upper()} is single-valued but was given {len(values)} "
                             "times; send it once")
        return values[0] if values else default

    def file(self, name: str) -> UploadedFile | None:
        """The uploaded file sent in the multipart field ``name`` (case-insensitive)."""
        wanted = name.upper()
        return next((f for f in self.files if f.name == wanted), None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(key == name.upper() for key, _ in self.pairs)


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass ``stream`` through, raising :class:`TooLarge` once more than ``limit`` bytes came."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"the request body exceeds {limit} bytes; send a smaller upload")
        yield chunk


# Characters XML 1.0 cannot carry: every VO answer is XML and may echo a parameter.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _refuse_control_characters(pairs: list[tuple[str, str]],
                                files: list[UploadedFile]) -> None:
    """A UsageError for control characters in a name, value or upload file name."""
    texts = [(name, text) for name, value in pairs for text in (name, value)]
    texts += [(f.field_name, text) for f in files for text in (f.field_name, f.filename or "")]
    for name, text in texts:
        found = _NOT_XML.search(text)
        if found:
            raise UsageError(f"parameter {name!r} contains the control character "
                             f"U+{ord(found.group()):04X}; remove it")


async def read_params(request: Request) -> Params:
    """DALI parameters of a GET query string and/or a POST form (urlencoded or multipart).

    Query-string parameters come first, then the body's. Uploaded files are kept apart in
    ``Params.files``; the body is read as a stream and refused with 413 beyond
    ``settings.limits.max_upload_bytes`` (plus 1 MiB for the form fields).
    """
    pairs = list(request.query_params.multi_items())
    files: list[UploadedFile] = []
    if request.method == "POST":
        settings = getattr(request.app.state, "settings", None)
        max_upload = settings.limits.max_upload_bytes if settings else 50 * 1024 * 1024
        limit = max_upload + 1024 * 1024
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(f"the request body ({declared} bytes) exceeds {limit} bytes; "
                           "send a smaller upload")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        stream = _limited(request.stream(), limit)
        try:
            if content_type == "multipart/form-data":
                form = await MultiPartParser(request.headers, stream, max_files=100,
                                             max_fields=10_000, max_part_size=limit).parse()
            elif content_type in ("application/x-www-form-urlencoded", ""):
                form = await FormParser(Headers(raw=request.headers.raw), stream,
                                        max_fields=100_000, max_part_size=limit).parse()
            else:
                raise UsageError(f"unsupported POST content type {content_type!r}; use "
                                 "application/x-www-form-urlencoded or multipart/form-data")
        except MultiPartException as exc:
            raise UsageError(f"malformed form body: {exc.message}") from exc
        except ClientDisconnect as exc:  # nobody reads the answer; not a server fault
            raise UsageError("the client closed the connection while sending") from exc
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                await value.close()
                if len(data) > max_upload:
                    raise TooLarge(f"upload {name!r} has {len(data)} bytes, more than the "
                                   f"limit of {max_upload}; send a smaller file")
                files.append(UploadedFile(name.upper(), name, value.filename,
                                          value.content_type, data))
            else:
                pairs.append((name, value))
    _refuse_control_characters(pairs, files)
    params = Params.from_pairs(pairs, files)
    run_ids = params.get_all("RUNID")
    if run_ids:  # DALI §3.2.5: a client's label for a run of requests, worth logging
        log.info("RUNID %s: %s %s", run_ids[0][:64], request.method, request.url.path)
    return params
