"""DALI 1.1 value syntax (§3.3) and RESPONSEFORMAT (§3.4.1): text -> typed values.

Every parser raises :class:`~vo_service.errors.UsageError` with a message that says what
to fix. The values of a cutout request are the same text whether they come from ``/sync``,
a SODA job or a catalog job's parameters, so the parsers live here in the products layer,
below both the protocols and the jobs (DESIGN.md "Rooms and doors"); protocol modules
import them from :mod:`vo_service.protocols.dali`, which re-exports them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from vo_service.errors import UsageError
from vo_service.shapes import Circle, Polygon, Range, ShapeError

VOTABLE_MIME = "application/x-votable+xml"

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


# The largest integer any parameter may hold: SQLite's INTEGER (64 bits), far beyond every
# count, duration or offset this service handles.
INT64_MAX = 2**63 - 1


def shorten(text: str, keep: int = 40) -> str:
    """``text`` for an error message: a long value cut, with its length said."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def parse_int(name: str, text: str, *, minimum: int | None = None,
              maximum: int = INT64_MAX) -> int:
    """An integer within [``minimum``, ``maximum``] (at most 64 bits by default).

    The digits are counted before converting: a number of thousands of digits is refused
    without building it (Python refuses to, beyond 4,300 digits).
    """
    text = text.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise UsageError(f"{name}: {shorten(text)!r} is not an integer")
    low = -INT64_MAX if minimum is None else minimum
    # Compare lengths first: never convert a number of thousands of digits.
    longest = len(str(max(abs(low), maximum)))
    huge = len(text.lstrip("+-").lstrip("0")) > longest
    negative = text.startswith("-")
    if (huge and negative) or (not huge and int(text) < low):
        raise UsageError(f"{name}: must be at least {low}, got {shorten(text)}")
    if huge or int(text) > maximum:
        raise UsageError(f"{name}: {shorten(text)} is too large; give at most {maximum}")
    return int(text)


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
    """``build(*args)``; a ShapeError becomes a UsageError under one label: the shape's own
    (``CIRCLE: …``) is dropped when ``name`` ends with it (``POS CIRCLE: RA 400 …``)."""
    try:
        return build(*args)
    except ShapeError as exc:
        kind = build.__name__.upper()
        detail = str(exc).removeprefix(f"{kind}: ")
        label = name if name.split()[-1] == kind else f"{name} {kind}"
        raise UsageError(f"{label}: {detail}") from exc


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


# A media type as HTTP writes it (RFC 9110 §8.3.1): token/token, then ``; name=value``
# parameters whose value is a token or a quoted string of printable ASCII.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;(?:[ \t]*{_TOKEN}=(?:{_TOKEN}|\"(?:[ !#-\[\]-~]|\\[ -~])*\"))?)*")


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
    if "/" in requested and not _MEDIA_TYPE.fullmatch(requested):
        # It would be echoed as Content-Type: only what HTTP allows there (RFC 9110 §8.3).
        raise UsageError(f"RESPONSEFORMAT {shorten(requested)!r} is not a MIME type that "
                         "HTTP can carry (type/subtype[;name=value], printable ASCII); use "
                         "one of " + ", ".join(supported))
    bare = requested.split(";")[0].strip().lower()
    mime = FORMAT_ALIASES.get(bare, bare)
    if mime not in supported:
        raise UsageError(f"RESPONSEFORMAT {requested!r} is not supported here; use one of "
                         + ", ".join(supported))
    content_type = requested if "/" in bare else mime
    return ResponseFormat(mime, content_type)
