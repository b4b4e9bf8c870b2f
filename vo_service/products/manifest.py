"""What a catalog batch job hands back: the manifest VOTable and the ZIP bundle.

The manifest's FIELDs are defined in ``votable_templates/manifest.xml`` and written by
astropy; its rows, one :class:`ManifestRow` each, are written here column by column, in
the bytes astropy would write (a manifest has tens of thousands of rows, and astropy's
TABLEDATA writer makes several Python calls per cell). The bundle is written member by
member into a file on disk as stamps are made (never built in memory), one folder per band.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO

import numpy as np
from astropy.io.votable import parse_single_table
from astropy.io.votable.tree import Field, Info
from astropy.utils.xml.writer import xml_escape_cdata

from vo_service.engine.bundle import ZipStream, member_data_offsets
from vo_service.engine.cutout import StampStatus
from vo_service.engine.executors import pickled_as_arguments
from vo_service.votables import load_template, votable_bytes

MANIFEST_MIME = "application/x-votable+xml"
ZIP_MIME = "application/zip"
ROWS_PER_BLOCK = 4096  # rows made at once: column-wise speed, bounded memory


@pickled_as_arguments  # rows come back from worker processes, a unit at a time
@dataclass(slots=True)
class ManifestRow:
    """One manifest row: a target on one image, or a target no image answered (a bad
    catalog row, a position inside no image: then without the image's columns).

    Attribute names are the manifest's FIELD names; None is an empty cell. Not frozen: a
    frozen dataclass is made 4x slower, and a job makes one row per stamp.
    """

    target_id: str
    row: int  # the target's row in the uploaded catalog, from 1
    ra: float | None
    dec: float | None
    status: StampStatus
    message: str | None = None
    collection: str | None = None
    instrument: str | None = None
    band: str | None = None
    product_type: str | None = None
    image_id: str | None = None  # the source image's publisher DID
    access_url: str | None = None
    content_type: str | None = None
    preview_url: str | None = None
    file: str | None = None  # path in the ZIP bundle
    pixel_box: str | None = None  # FITS section, see format_pixel_box
    bytes: int | None = None  # size of the stamp file
    stitched_from: str | None = None  # publisher DIDs behind a stitched stamp (STITCH)
    # values of FIELDs a job adds after the template's (photometry), by FIELD name
    extra: dict[str, object] | None = None


ExtraField = tuple[str, str, str, str, str]  # name, datatype, unit, ucd, description


def format_pixel_box(ranges: Sequence[tuple[int, int]] | None) -> str | None:
    """0-based half-open ranges as a FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive)."""
    if not ranges:
        return None
    return "[" + ",".join(f"{start + 1}:{stop}" for start, stop in ranges) + "]"


def manifest_bytes(rows: Sequence[ManifestRow], *,
                   infos: Mapping[str, str] = {},  # noqa: B006 - never mutated
                   extra_fields: Sequence[ExtraField] = ()) -> bytes:
    """The manifest VOTable 1.4 with ``rows`` and INFOs after the query status;
    ``extra_fields`` are FIELDs after the template's, their values in ``row.extra``."""
    buffer = io.BytesIO()
    _write(buffer, rows, infos, extra_fields)
    return buffer.getvalue()


def _write(out: BinaryIO, rows: Sequence[ManifestRow], infos: Mapping[str, str],
           extra_fields: Sequence[ExtraField] = ()) -> None:
    """Write the manifest to ``out``: astropy's document with a TABLEDATA of ``rows`` put at
    the end of its (only) TABLE, laid out as astropy lays it out, a block of rows at a time
    (column by column within a block, so that memory stays bounded)."""
    layout = _Layout(infos, extra_fields)
    if not rows:
        out.write(layout.head + layout.tail)
        return
    out.write(layout.head + layout.data_start)
    for start in range(0, len(rows), ROWS_PER_BLOCK):
        out.write("".join(layout.row_texts(rows[start:start + ROWS_PER_BLOCK])).encode())
    out.write(layout.data_end + layout.tail)


class _Layout:
    """The manifest document around its rows (INFOs, FIELDs) and how rows are written."""

    def __init__(self, infos: Mapping[str, str], extra_fields: Sequence[ExtraField]) -> None:
        votable = load_template("manifest.xml")
        resource = votable.resources[0]
        for name, value in infos.items():
            resource.infos.append(Info(name=name, value=str(value)))
        table = resource.tables[0]
        table._nrows = None  # the template's parsed nrows=0 would be written out otherwise
        template_names = {field.name for field in table.fields}
        for name, datatype, unit, ucd, description in extra_fields:
            extra = Field(votable, name=name, datatype=datatype, ucd=ucd or None,
                          unit=unit or None, arraysize="*" if datatype == "char" else None)
            extra.description = description
            table.fields.append(extra)
        document = votable_bytes(votable)  # everything but the rows
        self.fields = [(attrgetter(field.name) if field.name in template_names
                        else _extra_getter(field.name), field.datatype)
                       for field in table.fields]
        end = document.rindex(b"</TABLE>")
        line_start = document.rindex(b"\n", 0, end) + 1
        self.indent = " " * (end - line_start)
        self.head, self.tail = document[:line_start], document[line_start:]
        self.data_start = f"{self.indent} <DATA>\n{self.indent}  <TABLEDATA>\n".encode()
        self.data_end = f"{self.indent}  </TABLEDATA>\n{self.indent} </DATA>\n".encode()

    def row_texts(self, rows: Sequence[ManifestRow]) -> list[str]:
        """The ``<TR>`` element of each row, made column by column."""
        return _row_texts(rows, self.fields, self.indent)


def render_rows(rows: Sequence[ManifestRow],
                extra_fields: Sequence[ExtraField] = ()) -> list[str]:
    """The ``<TR>`` text of each row, as :func:`write_manifest` writes it: rows rendered
    once can be written many times (:func:`write_rendered`)."""
    layout = _row_layout(tuple(extra_fields))
    texts: list[str] = []
    for start in range(0, len(rows), ROWS_PER_BLOCK):
        texts.extend(layout.row_texts(rows[start:start + ROWS_PER_BLOCK]))
    return texts


@functools.lru_cache(maxsize=8)
def _row_layout(extra_fields: tuple[ExtraField, ...]) -> _Layout:
    """The layout rows are rendered with (the INFOs do not change them): made once, as a
    job renders its rows a unit of work at a time (1.7 ms each)."""
    return _Layout({}, extra_fields)


def write_rendered(path: Path, texts: Sequence[str], *,
                   infos: Mapping[str, str] = {},  # noqa: B006 - never mutated
                   extra_fields: Sequence[ExtraField] = ()) -> int:
    """Write a manifest of rows rendered by :func:`render_rows` (the same bytes as
    :func:`write_manifest` of those rows), atomically; return its size in bytes."""
    layout = _Layout(infos, extra_fields)
    temporary = path.with_name(path.name + ".part")
    with open(temporary, "wb") as handle:
        if texts:
            handle.write(layout.head + layout.data_start)
            for start in range(0, len(texts), ROWS_PER_BLOCK):
                handle.write("".join(texts[start:start + ROWS_PER_BLOCK]).encode())
            handle.write(layout.data_end + layout.tail)
        else:
            handle.write(layout.head + layout.tail)
        size = handle.tell()
    os.replace(temporary, path)
    return size


def _extra_getter(name: str) -> Callable[[ManifestRow], object]:
    """The value of an extra FIELD in a row (None when the row has none)."""
    return lambda row: row.extra.get(name) if row.extra else None


def _row_texts(rows: Sequence[ManifestRow], fields: list[tuple[Callable, str]],
               indent: str) -> list[str]:
    """The ``<TR>`` element of each row, made column by column."""
    cell_indent = indent + "    "
    columns = [_column_cells(datatype, [getter(row) for row in rows], cell_indent)
               for getter, datatype in fields]
    row_start, row_end = f"{indent}   <TR>\n", f"{indent}   </TR>\n"
    return [row_start + "".join(cells) + row_end for cells in zip(*columns, strict=True)]


def _column_cells(datatype: str, values: list, indent: str) -> list[str]:
    """The ``<TD>`` lines of one column; None (and NaN) are empty cells, as astropy writes
    masked values."""
    empty = f"{indent}<TD/>\n"
    start, end = f"{indent}<TD>", "</TD>\n"
    text = _CELL_TEXT.get(datatype)
    if text is None:
        raise ValueError(f"manifest FIELDs of datatype {datatype!r} are not supported")
    cells = []
    for value in values:
        shown = None if value is None else text(value)
        cells.append(start + shown + end if shown else empty)
    return cells


def _double_text(value: float) -> str | None:
    """A double as astropy writes it: the shortest repr, ``.0`` dropped; NaN is empty."""
    number = float(value)
    if math.isnan(number):
        return None
    if math.isinf(number):
        return "+InF" if number > 0 else "-InF"
    shown = repr(number)
    return shown[:-2] if shown.endswith(".0") else shown


_CELL_TEXT: dict[str, Callable[[object], str | None]] = {
    "char": lambda value: xml_escape_cdata(str(value)),
    "unicodeChar": lambda value: xml_escape_cdata(str(value)),
    "int": lambda value: str(int(value)),
    "long": lambda value: str(int(value)),
    "double": _double_text,
}


def read_manifest(path: Path) -> list[ManifestRow]:
    """The rows of a manifest this service wrote (empty cells, <TD/>, are None), column by
    column."""
    table = parse_single_table(str(path)).to_table()
    columns: list = []
    for name in _ROW_FIELDS:
        if name not in table.colnames:  # a FIELD added after the file was written (or extra)
            columns.append(repeat(None))
            continue
        column = table[name]
        values = np.asarray(column).tolist()
        masked = np.ma.getmaskarray(column).tolist()
        cells = [None if hidden or value == "" else value  # <TD/>: None or "" written
                 for value, hidden in zip(values, masked, strict=True)]
        if name == "status":
            cells = [_STATUSES[value] for value in cells]
        columns.append(cells)
    return [ManifestRow(*cells) for cells in zip(*columns)]  # noqa: B905 - repeat(None) is endless


_ROW_FIELDS = [f.name for f in dataclasses.fields(ManifestRow)]
_STATUSES = {str(status): status for status in StampStatus}


def write_manifest(path: Path, rows: Sequence[ManifestRow], *,
                   infos: Mapping[str, str] = {},  # noqa: B006 - never mutated
                   extra_fields: Sequence[ExtraField] = ()) -> int:
    """Write the manifest atomically; return its size in bytes."""
    temporary = path.with_name(path.name + ".part")
    with open(temporary, "wb") as handle:
        _write(handle, rows, infos, extra_fields)
        size = handle.tell()
    os.replace(temporary, path)
    return size


class Bundle:
    """A ZIP file on disk that grows member by member (stored: FITS barely compresses).

    Written in one pass by :class:`vo_service.engine.bundle.ZipStream`: each member is
    read once and written once (no seek back to patch its local header, as ``zipfile``
    does), which matters for tens of thousands of small stamps. The file is written in
    place, not renamed at the end: the job serves its stamps from their byte ranges while
    the bundle grows, and lists the bundle itself only once it is closed (a job that
    stopped half-way runs again from the start, rewriting it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = ZipStream(path)
        self.members = 0

    def add_file(self, source: Path, arcname: str) -> None:
        """Copy ``source`` into the bundle as ``arcname`` (e.g. ``VIS/target_BGSUB.fits``)."""
        with open(source, "rb") as handle:
            content = handle.read()
        self.add_bytes(content, arcname)

    def add_bytes(self, content: bytes, arcname: str) -> None:
        """Add a member from memory (the manifest, or a stamp's bytes)."""
        self._zip.add(arcname, (content,))
        self.members += 1

    def adopt(self, entries: list[tuple[bytes, int, int, int]]) -> dict[str, int]:
        """Take on members `ZipAppender`s of this machine appended to ``path``; returns where
        each member's bytes start in the bundle, by name."""
        self._zip.adopt(entries)
        self.members += len(entries)
        return member_data_offsets(entries)

    def add_part(self, part: Path, entries: list[tuple[bytes, int, int, int]]
                 ) -> dict[str, int]:
        """Append a part written by a worker (``ZipStream.close_part``), then delete it;
        returns where each member's bytes start in the bundle, by name."""
        placed = self._zip.append_part(part, entries)
        self.members += len(entries)
        part.unlink(missing_ok=True)
        return member_data_offsets(placed)

    def close(self) -> int:
        """Finish the ZIP directory; return the bundle's size in bytes."""
        self._zip.close()
        return self.path.stat().st_size
