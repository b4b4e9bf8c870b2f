"""A TAP request as typed values (TAP 1.1 §2.7), shared by ``/tap/sync`` and TAP jobs.

The parameters of a sync request and the stored parameters of a job go through the same
:func:`parse_tap_request`; what is wrong raises :class:`TapError` (the protocols answer it as
a DALI ``UsageError``, a job ends in ERROR with it). Uploads are read by
:mod:`vo_service.products.tap_upload`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vo_service.archive.tap_query import UploadTable

LANGUAGES = {"ADQL", "ADQL-2.0", "ADQL-2.1"}
MAXREC_DEFAULT = 10_000
MAXREC_HARD = 100_000  # rows of one result (TAPRegExt outputLimit hard)


class TapError(ValueError):
    """A TAP request this service cannot run; the message says what to fix."""


@dataclass(frozen=True)
class OutputFormat:
    """One result serialisation: its MIME type, what TAPRegExt calls it, how to write it."""

    mime: str
    aliases: tuple[str, ...]
    ivo_id: str | None
    writer: str  # tabledata, binary2, csv, tsv, fits
    content_type: str


OUTPUT_FORMATS = (
    OutputFormat("application/x-votable+xml", ("votable", "votable/td", "text/xml"),
                 "ivo://ivoa.net/std/TAPRegExt#output-votable-td", "tabledata",
                 "application/x-votable+xml"),
    OutputFormat("application/x-votable+xml;serialization=BINARY2", ("votable/b2", "binary2"),
                 "ivo://ivoa.net/std/TAPRegExt#output-votable-binary2", "binary2",
                 "application/x-votable+xml;serialization=BINARY2"),
    OutputFormat("text/csv", ("csv", "text/csv;header=present"), None, "csv",
                 "text/csv;header=present"),
    OutputFormat("text/tab-separated-values", ("tsv",), None, "tsv",
                 "text/tab-separated-values"),
    OutputFormat("application/fits", ("fits",), None, "fits", "application/fits"),
)


def _mime_key(text: str) -> str:
    return ";".join(part.strip() for part in text.strip().lower().split(";"))


def find_format(text: str | None) -> OutputFormat:
    """The output format named by RESPONSEFORMAT/FORMAT (MIME type or alias); VOTable if
    absent."""
    if text is None:
        return OUTPUT_FORMATS[0]
    key = _mime_key(text)
    for output in OUTPUT_FORMATS:
        if key in {_mime_key(output.mime), *(_mime_key(a) for a in output.aliases)}:
            return output
    names = ", ".join(f.aliases[0] for f in OUTPUT_FORMATS)
    raise TapError(f"RESPONSEFORMAT {text!r} is not offered; use one of {names} (or their "
                   "MIME types, see /tap/capabilities)")


@dataclass(frozen=True)
class TapRequest:
    """One ADQL query with its result limits, format and uploaded tables."""

    query: str
    lang: str
    maxrec: int
    output: OutputFormat
    uploads: tuple[UploadTable, ...] = ()
    runid: str | None = None


@dataclass(frozen=True)
class UploadSpec:
    """``UPLOAD=name,uri``: the table name and where its VOTable is."""

    name: str
    uri: str


_UPLOAD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def parse_uploads(values: Sequence[str]) -> list[UploadSpec]:
    """``UPLOAD`` values (each ``name,uri``, several joined by ``;``), names checked."""
    specs: list[UploadSpec] = []
    for value in values:
        for item in value.split(";"):
            if not item.strip():
                continue
            name, comma, uri = item.partition(",")
            name, uri = name.strip(), uri.strip()
            if not comma or not uri:
                raise TapError(f"UPLOAD {item!r} must be name,uri (e.g. t1,param:t1)")
            if not _UPLOAD_NAME.fullmatch(name):
                raise TapError(f"UPLOAD table name {name!r} must start with a letter and hold "
                               "only letters, digits and _")
            if any(spec.name.lower() == name.lower() for spec in specs):
                raise TapError(f"UPLOAD names the table {name!r} twice; give each table "
                               "its own name")
            specs.append(UploadSpec(name, uri))
    return specs


def single(values: Mapping[str, list[str]], name: str) -> str | None:
    """The one value of a single-valued parameter (TapError when repeated)."""
    found = values.get(name, [])
    if len(found) > 1:
        raise TapError(f"{name} is single-valued but was given {len(found)} times; send it "
                       "once")
    return found[0] if found else None


def parse_tap_request(values: Mapping[str, list[str]], uploads: Sequence[UploadTable] = (),
                      *, maxrec_default: int = MAXREC_DEFAULT,
                      maxrec_hard: int = MAXREC_HARD) -> TapRequest:
    """A :class:`TapRequest` from upper-cased parameter names -> values (empty dropped)."""
    lang = single(values, "LANG")
    if lang is None:
        raise TapError("LANG is missing; send LANG=ADQL")
    if lang.strip().upper() not in LANGUAGES:
        raise TapError(f"LANG {lang!r} is not supported; this service speaks "
                       f"{', '.join(sorted(LANGUAGES))}")
    query = single(values, "QUERY")
    if query is None:
        raise TapError("QUERY is missing; send an ADQL query, e.g. QUERY=SELECT TOP 10 * "
                       "FROM ivoa.obscore")
    formats = [v for name in ("RESPONSEFORMAT", "FORMAT") for v in values.get(name, [])]
    if len({_mime_key(f) for f in formats}) > 1:
        raise TapError("RESPONSEFORMAT and FORMAT disagree; send one of them")
    output = find_format(formats[0] if formats else None)
    maxrec_text = single(values, "MAXREC")
    if maxrec_text is None:
        maxrec = maxrec_default
    else:
        text = maxrec_text.strip()
        if not re.fullmatch(r"\+?\d+", text):
            raise TapError(f"MAXREC {maxrec_text!r} is not a non-negative integer")
        maxrec = min(int(text), maxrec_hard)
    return TapRequest(query, lang.strip().upper(), maxrec, output, tuple(uploads),
                      single(values, "RUNID"))
