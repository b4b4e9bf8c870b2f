"""Running a TAP request and writing its result table (VOTable TABLEDATA/BINARY2, CSV, TSV,
FITS), shared by ``/tap/sync`` and TAP jobs.

Values are typed from the translated query's column metadata (TAP_SCHEMA for selected
columns), never from SQLite's storage classes: a long stays a long even where SQLite hands
back a float, geometry becomes DALI arrays, NULL becomes a masked cell.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.votable.tree import Field, Info, Resource, VOTableFile
from astropy.io.votable.tree import TableElement as VOTableTable
from astropy.table import Table

from vo_service.archive import tap_geometry as geo
from vo_service.archive import tap_query
from vo_service.archive.tap_schema import ColumnMeta, published_tables
from vo_service.products.adql import AdqlError, translate
from vo_service.products.tap_request import TapError, TapRequest
from vo_service.votables import fill_column, write_xml

VOTABLE_VERSION = "1.4"
TAP_STANDARD_ID = "ivo://ivoa.net/std/TAP"
INTEGER_TYPES = {"short": np.int16, "int": np.int32, "long": np.int64, "unsignedByte": np.uint8}
FLOAT_TYPES = {"float": np.float32, "double": np.float64}


@dataclass(frozen=True)
class TapResult:
    """A finished query: typed columns, rows (SQLite values) and whether MAXREC cut them."""

    columns: tuple[ColumnMeta, ...]
    rows: list[tuple[object, ...]]
    overflow: bool
    query: str


def run(request: TapRequest, index_path: Path, base_url: str, *, seconds: float,
        stop: Callable[[], bool] | None = None) -> TapResult:
    """Translate and execute ``request``; TapError (with the ADQL position) when it cannot."""
    tables = (*published_tables(), *(upload.meta for upload in request.uploads))
    try:
        translation = translate(request.query, tables)
    except AdqlError as exc:
        raise TapError(f"invalid ADQL: {exc}") from None
    if request.maxrec == 0:  # TAP 1.1 §2.7.4: metadata only, no need to run the query
        return TapResult(translation.columns, [], True, request.query)
    session = tap_query.open_session(index_path, base_url, request.uploads, seconds=seconds,
                                     stop=stop)
    try:
        result = tap_query.execute(session, translation.sql, request.maxrec)
    except tap_query.QueryFailed as exc:
        raise TapError(str(exc)) from None
    finally:
        session.close()
    return TapResult(translation.columns, result.rows, result.overflow, request.query)


# --- typing values ------------------------------------------------------------------------


def _is_array(column: ColumnMeta) -> bool:
    return column.datatype not in ("char", "unicodeChar") and column.arraysize not in (
        None, "1")


def _cell(column: ColumnMeta) -> Callable[[object], object]:
    """Convert one SQLite value to the column's type (None for NULL or unconvertible)."""
    if column.xtype and column.xtype.lower() == "adql:region":
        def region(value: object) -> str | None:
            try:
                return None if value is None else geo.stc_s(str(value))
            except (geo.GeometryError, ValueError, TypeError):
                return str(value)
        return region
    if column.datatype in ("char", "unicodeChar"):
        return lambda value: None if value is None else str(value)
    if _is_array(column):
        def array(value: object) -> list[float] | None:
            if value is None:
                return None
            text = str(value)
            try:
                if column.xtype in ("point", "circle", "polygon") or not text.startswith("["):
                    return geo.dali_values(text)
                return [float("nan") if v is None else float(v) for v in json.loads(text)]
            except (geo.GeometryError, ValueError, TypeError):
                return None
        return array
    if column.datatype in INTEGER_TYPES:
        limits = np.iinfo(INTEGER_TYPES[column.datatype])

        def integer(value: object) -> int | None:
            if isinstance(value, int):  # exactly: a long is not a double (2**53 + 1)
                number = value
            else:
                try:
                    real = float(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    return None
                if not math.isfinite(real):
                    return None
                number = int(real)
            if not limits.min <= number <= limits.max:
                raise TapError(f"column {column.name.strip(chr(34))!r}: {number} does not "
                               f"fit its datatype {column.datatype} ({limits.min} to "
                               f"{limits.max}); CAST it to a wider type, e.g. BIGINT or "
                               "DOUBLE")
            return number
        return integer
    if column.datatype == "boolean":
        return lambda value: None if value is None else bool(value)

    def real(value: object) -> float | None:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None
    return real


def typed_columns(result: TapResult) -> list[list[object]]:
    """Column-wise converted values."""
    converters = [_cell(column) for column in result.columns]
    return [[convert(row[k]) for row in result.rows] for k, convert in enumerate(converters)]


# --- VOTable ------------------------------------------------------------------------------


def _field(votable: VOTableFile, column: ColumnMeta, used: set[str]) -> Field:
    name = column.name.strip('"')
    ident = "".join(c if c.isalnum() else "_" for c in name)
    if not ident[:1].isalpha():
        ident = f"c_{ident}"
    while ident in used:
        ident += "_"
    used.add(ident)
    arraysize = None if column.arraysize == "1" else column.arraysize
    if column.datatype == "char" and arraysize is None:
        arraysize = "*"
    field = Field(votable, name=name, ID=ident, datatype=column.datatype, arraysize=arraysize,
                  unit=column.unit, ucd=column.ucd, utype=column.utype, xtype=column.xtype)
    if column.description:
        field.description = column.description
    return field


def votable_document(result: TapResult, serialization: str = "tabledata") -> bytes:
    """The result as a VOTable 1.4 (TABLEDATA or BINARY2); OVERFLOW after the table."""
    votable = VOTableFile(version=VOTABLE_VERSION)
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(Info(name="QUERY_STATUS", value="OK", ID="status"))
    resource.infos.append(Info(name="standardID", value=TAP_STANDARD_ID, ID="standard"))
    resource.infos.append(Info(name="QUERY", value=result.query, ID="query"))
    table = VOTableTable(votable, name="result")
    resource.tables.append(table)
    used: set[str] = set()
    values_by_column = typed_columns(result)
    for column, values in zip(result.columns, values_by_column, strict=True):
        field = _field(votable, column, used)
        if column.datatype == "char" and any(
                isinstance(v, str) and not v.isascii() for v in values):
            field.datatype = "unicodeChar"  # VOTable char is ASCII only
        table.fields.append(field)
    table.create_arrays(len(result.rows))
    for k, (column, values) in enumerate(zip(result.columns, values_by_column,
                                             strict=True)):
        fill_column(table.array, table.array.dtype.names[k], values,
                    is_text=column.datatype in ("char", "unicodeChar"),
                    is_array=_is_array(column))
    document = write_xml(votable, serialization)
    if result.overflow:
        # DALI 1.1 §4.4.1 / TAP 1.1 §3: OVERFLOW in an INFO after the TABLE (astropy writes
        # a resource's INFOs before its tables, so it is placed here).
        end = document.rindex(b"</TABLE>") + len(b"</TABLE>")
        document = (document[:end] + b'\n  <INFO name="QUERY_STATUS" value="OVERFLOW"/>'
                    + document[end:])
    return document


# --- text and FITS ------------------------------------------------------------------------


def _text_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(repr(float(v)) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def delimited_document(result: TapResult, delimiter: str) -> bytes:
    """CSV (RFC 4180, a header row) or TSV (no tabs or newlines inside values)."""
    buffer = io.StringIO()
    names = [column.name.strip('"') for column in result.columns]
    values = typed_columns(result)
    if delimiter == ",":
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(names)
        for row in zip(*values, strict=True) if values else []:
            writer.writerow([_text_value(v) for v in row])
    else:
        def clean(text: str) -> str:
            return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
        buffer.write("\t".join(clean(n) for n in names) + "\n")
        for row in zip(*values, strict=True) if values else []:
            buffer.write("\t".join(clean(_text_value(v)) for v in row) + "\n")
    return buffer.getvalue().encode("utf-8")


def fits_document(result: TapResult) -> bytes:
    """A FITS binary table; geometry and other arrays as variable-length double columns."""
    table = Table()
    used: set[str] = set()
    # no rows: one row of nulls gives every column its FITS format (astropy cannot tell
    # the format of an empty variable-length column), then the table is cut to none
    columns = typed_columns(result) if result.rows else [[None] for _ in result.columns]
    for column, values in zip(result.columns, columns, strict=True):
        name = column.name.strip('"')
        while name.lower() in used:
            name += "_"
        used.add(name.lower())
        if column.datatype in ("char", "unicodeChar"):
            # FITS strings are bytes: UTF-8 keeps non-ASCII text (readers see the bytes)
            data = np.ma.array([(v or "").encode("utf-8") for v in values], dtype=bytes,
                               mask=[v is None for v in values])
        elif _is_array(column):
            data = np.empty(len(values), dtype=object)
            for index, value in enumerate(values):
                data[index] = np.asarray(value if value is not None else [], dtype=float)
        else:
            dtype = INTEGER_TYPES.get(column.datatype) or FLOAT_TYPES.get(column.datatype,
                                                                          np.float64)
            if column.datatype == "boolean":
                dtype = bool
            data = np.ma.array([v if v is not None else 0 for v in values], dtype=dtype,
                               mask=[v is None for v in values])
        table[name] = data
        if column.unit:
            table[name].unit = column.unit
        if column.description:
            table[name].description = column.description
    hdu = fits.table_to_hdu(table) if len(table.columns) else fits.BinTableHDU()
    if not result.rows and len(table.columns):
        hdu.data = hdu.data[:0]
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def write(result: TapResult, writer: str) -> bytes:
    """The result serialised by ``writer`` (an OutputFormat's writer)."""
    if writer in ("tabledata", "binary2"):
        return votable_document(result, writer)
    if writer == "csv":
        return delimited_document(result, ",")
    if writer == "tsv":
        return delimited_document(result, "\t")
    if writer == "fits":
        return fits_document(result)
    raise TapError(f"unknown output writer {writer!r}")


def run_and_write(request: TapRequest, index_path: Path, base_url: str, *, seconds: float,
                  stop: Callable[[], bool] | None = None) -> bytes:
    """:func:`run` then :func:`write` in the requested format."""
    return write(run(request, index_path, base_url, seconds=seconds, stop=stop),
                 request.output.writer)


def values_of(result: TapResult, name: str) -> Sequence[object]:
    """Typed values of one output column (tests, benchmarks)."""
    names = [column.name.strip('"') for column in result.columns]
    return typed_columns(result)[names.index(name)]
