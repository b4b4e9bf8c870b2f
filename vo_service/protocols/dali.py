"""DALI 1.1 common ground: parameters, value syntax, error documents, VOTable output.

Every protocol module reads its request with :func:`read_params`, turns values into typed
objects with the ``parse_*`` functions (each raises :class:`UsageError` with a message that
says what to fix) and lets any :class:`DALIError` escape: the application's exception
handler (:func:`dali_exception_handler`) answers it with a DALI error VOTable.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from astropy.io.votable import parse as parse_votable
from astropy.io.votable.tree import Info, VOTableFile
from astropy.io.votable.tree import TableElement as VOTableTable
from astropy.table import Table
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from vo_service.shapes import Circle, Polygon, Range, ShapeError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parents[2] / "votable_templates"
VOTABLE_MIME = "application/x-votable+xml"
VOTABLE_VERSION = "1.4"

# ---------------------------------------------------------------------------------------
# Errors (DALI 1.1 §4.2, SODA §5.2 labels)


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


def public_base_url(request: Request) -> str:
    """The base URL written into VO documents: ``settings.base_url``, else the request's own."""
    settings = getattr(request.app.state, "settings", None)
    configured = getattr(settings, "base_url", None)
    return (configured or str(request.base_url)).rstrip("/")


# ---------------------------------------------------------------------------------------
# VOTable output


def votable_bytes(votable: VOTableFile | Table) -> bytes:
    """Serialise a VOTable (or an astropy Table) as VOTable 1.4 TABLEDATA.

    The version is set explicitly: newer astropy releases default to a newer VOTable
    version that common validators and clients reject (DESIGN: decisions).
    """
    if isinstance(votable, Table):
        votable = VOTableFile.from_table(votable)
    votable.version = VOTABLE_VERSION
    buffer = io.BytesIO()
    votable.to_xml(buffer, tabledata_format="tabledata")
    return buffer.getvalue()


def votable_response(votable: VOTableFile | Table, *, status: int = 200,
                     media_type: str = VOTABLE_MIME,
                     headers: dict[str, str] | None = None) -> Response:
    """An HTTP response carrying ``votable`` (see :func:`votable_bytes`)."""
    return Response(votable_bytes(votable), status_code=status, media_type=media_type,
                    headers=headers)


def load_template(name: str) -> VOTableFile:
    """Parse ``votable_templates/<name>``: the FIELDs and PARAMs of one kind of response."""
    return parse_votable(str(TEMPLATES / name), verify="exception")


def fill_rows(table: VOTableTable, rows: Sequence[Mapping[str, object]]) -> None:
    """Fill a template TABLE with ``rows`` (dicts by FIELD name); None or absent = null."""
    table.create_arrays(len(rows))
    table._nrows = None  # the template's parsed nrows=0 would be written out otherwise
    array = table.array
    for field_ in table.fields:
        name = field_.name
        is_text = field_.datatype in ("char", "unicodeChar")
        is_array = not is_text and field_.arraysize not in (None, "1")
        for index, row in enumerate(rows):
            value = row.get(name)
            if value is None:
                array.mask[name][index] = True
                if is_text:
                    array[name][index] = ""
                elif is_array:
                    array[name][index] = np.zeros(0)
            else:
                array[name][index] = np.asarray(value, dtype=float) if is_array else value
                if isinstance(value, float) and math.isnan(value):
                    array.mask[name][index] = True


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


async def dali_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler: a :class:`DALIError` becomes its DALI error document."""
    assert isinstance(exc, DALIError)
    standard_id = request.scope.get("vo_standard_id")
    return error_response(exc, standard_id=standard_id)


async def server_error_handler(request: Request, exc: Exception) -> Response:
    """Any other exception is a bug: log it with the traceback, answer a 500 DALI error."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    error = DALIError("internal error; the operators have been told (see the server log)")
    return error_response(error)


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
    params = Params.from_pairs(pairs, files)
    run_ids = params.get_all("RUNID")
    if run_ids:  # DALI §3.2.5: a client's label for a run of requests, worth logging
        log.info("RUNID %s: %s %s", run_ids[0][:64], request.method, request.url.path)
    return params


# ---------------------------------------------------------------------------------------
# Values (DALI 1.1 §3.3)

_NUMBER = re.compile(
    r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)",
    re.IGNORECASE,
)


def _number(name: str, text: str, *, allow_inf: bool = False) -> float:
    """One VOTable-syntax number; NaN never, infinities only when ``allow_inf``."""
    if not _NUMBER.fullmatch(text):
        raise UsageError(f"{name}: {text!r} is not a number")
    value = float(text)
    if math.isnan(value):
        raise UsageError(f"{name}: NaN is not allowed; give a number")
    if math.isinf(value) and not allow_inf:
        raise UsageError(f"{name}: must be a finite number, got {text!r}")
    return value


def _numbers(name: str, text: str, *, allow_inf: bool = False) -> list[float]:
    return [_number(name, token, allow_inf=allow_inf) for token in text.split()]


def parse_float(name: str, text: str, *, allow_inf: bool = False) -> float:
    """A single number (``5e-07`` fine; infinities only when ``allow_inf``)."""
    return _number(name, text.strip(), allow_inf=allow_inf)


def parse_int(name: str, text: str, *, minimum: int | None = None) -> int:
    """An integer, optionally at least ``minimum``."""
    text = text.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise UsageError(f"{name}: {text!r} is not an integer")
    value = int(text)
    if minimum is not None and value < minimum:
        raise UsageError(f"{name}: must be >= {minimum}, got {value}")
    return value


def parse_bool(name: str, text: str) -> bool:
    """A DALI boolean: ``true``/``false``/``1``/``0`` (any case)."""
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise UsageError(f"{name}: {text!r} is not a boolean; use true or false")


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?)?")


def parse_timestamp(name: str, text: str) -> datetime:
    """A DALI timestamp ``YYYY-MM-DD['T'hh:mm:ss[.SSS]][Z]`` in UTC, as an aware datetime."""
    text = text.strip()
    if not _TIMESTAMP.fullmatch(text):
        raise UsageError(f"{name}: {text!r} is not a timestamp; use YYYY-MM-DDThh:mm:ss (UTC)")
    try:
        value = datetime.fromisoformat(text.removesuffix("Z"))
    except ValueError as exc:
        raise UsageError(f"{name}: {text!r} is not a valid date/time ({exc})") from exc
    return value.replace(tzinfo=UTC)


def parse_interval(name: str, text: str, *, allow_scalar: bool = False) -> tuple[float, float]:
    """A DALI interval ``lo hi`` (inclusive; ``±Inf`` open, any case); lo must not exceed hi.

    With ``allow_scalar`` a single number ``v`` means ``v v`` (SIA 2 numeric parameters).
    """
    values = _numbers(name, text, allow_inf=True)
    if allow_scalar and len(values) == 1:
        if math.isinf(values[0]):
            raise UsageError(f"{name}: a single value must be finite, got {text!r}")
        return values[0], values[0]
    if len(values) != 2:
        raise UsageError(f"{name}: expected an interval of two numbers 'lo hi', got {text!r}")
    low, high = values
    if low > high:
        raise UsageError(f"{name}: lower bound {low:g} exceeds upper bound {high:g}")
    return low, high


def _shape(build: type, name: str, *args: object) -> Circle | Range | Polygon:
    try:
        return build(*args)
    except ShapeError as exc:
        raise UsageError(f"{name}: {exc}") from exc


def parse_circle(text: str, name: str = "CIRCLE") -> Circle:
    """A DALI circle ``ra dec radius`` in degrees."""
    values = _numbers(name, text)
    if len(values) != 3:
        raise UsageError(f"{name}: expected 3 numbers 'ra dec radius' (degrees), got {text!r}")
    return _shape(Circle, name, *values)  # type: ignore[return-value]


def parse_polygon(text: str, name: str = "POLYGON") -> Polygon:
    """A DALI polygon ``ra1 dec1 ra2 dec2 ra3 dec3 ...`` (at least 3 vertices), degrees."""
    values = _numbers(name, text)
    if len(values) % 2 or len(values) < 6:
        raise UsageError(f"{name}: expected an even count of at least 6 numbers "
                         f"'ra1 dec1 ra2 dec2 ra3 dec3 ...', got {len(values)}")
    vertices = tuple(zip(values[0::2], values[1::2], strict=True))
    return _shape(Polygon, name, vertices)  # type: ignore[return-value]


def parse_range(text: str, name: str = "POS") -> Range:
    """A SODA RANGE ``ra_min ra_max dec_min dec_max`` (±Inf open; ra_min > ra_max wraps)."""
    values = _numbers(name, text, allow_inf=True)
    if len(values) != 4:
        raise UsageError(f"{name}: RANGE needs 4 numbers 'ra_min ra_max dec_min dec_max', "
                         f"got {text!r}")
    return _shape(Range, name, *values)  # type: ignore[return-value]


def parse_pos(text: str, name: str = "POS") -> Circle | Range | Polygon:
    """A SODA/SIA POS: ``CIRCLE ...``, ``RANGE ...`` or ``POLYGON ...`` (keyword any case)."""
    keyword, _, rest = text.strip().partition(" ")
    keyword = keyword.upper()
    if keyword == "CIRCLE":
        return parse_circle(rest, f"{name} CIRCLE")
    if keyword == "RANGE":
        return parse_range(rest, f"{name} RANGE")
    if keyword == "POLYGON":
        return parse_polygon(rest, f"{name} POLYGON")
    raise UsageError(f"{name}: must start with CIRCLE, RANGE or POLYGON, got {text!r}")


# ---------------------------------------------------------------------------------------
# RESPONSEFORMAT (DALI 1.1 §3.4.1)

FORMAT_ALIASES = {
    "votable": VOTABLE_MIME,
    "text/xml": VOTABLE_MIME,
    "application/xml": VOTABLE_MIME,
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "fits": "application/fits",
    "text": "text/plain",
    "html": "text/html",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "zip": "application/zip",
}


@dataclass(frozen=True)
class ResponseFormat:
    """A RESPONSEFORMAT: ``mime`` (canonical, no parameters) and the Content-Type to send."""

    mime: str
    content_type: str


def parse_responseformat(text: str | None, supported: Iterable[str],
                         default: str = VOTABLE_MIME) -> ResponseFormat:
    """Normalise RESPONSEFORMAT against the MIME types a resource can write.

    Short forms (``votable``, ``fits``, ``csv``…) map to MIME types; a requested full MIME
    type is echoed as Content-Type (DALI §3.4.1), MIME parameters included.
    """
    supported = list(supported)
    if text is None:
        return ResponseFormat(default, default)
    requested = text.strip()
    bare = requested.split(";")[0].strip().lower()
    mime = FORMAT_ALIASES.get(bare, bare)
    if mime not in supported:
        raise UsageError(f"RESPONSEFORMAT {requested!r} is not supported here; use one of "
                         + ", ".join(supported))
    content_type = requested if "/" in bare else mime
    return ResponseFormat(mime, content_type)
