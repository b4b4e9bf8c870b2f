"""Reading uploaded target catalogs: VOTable, FITS table, CSV/TSV.

The format is recognised from the content (``SIMPLE  =`` → FITS, ``<?xml``/``<VOTABLE`` →
VOTable, other text → CSV or TSV); the RA, Dec, ID and size columns are found by UCD, then by
common names, unless named by the caller; positions become ICRS degrees (both in
:mod:`vo_service.catalogs.columns`). A bad row (missing or out-of-range position, unreadable
text) is kept and reported in ``row_problems``; only a problem with the whole file raises
:class:`CatalogError`, whose message says what to fix.

Safety: a catalog is read from its own bytes only. Before a VOTable reaches astropy,
:mod:`vo_service.catalogs.safety` refuses DTD/entity declarations, ``<STREAM href>`` (which
astropy would follow to local files or URLs) and XInclude; every format is refused early when
it has more than ``max_columns`` columns, and RA/Dec/ID/size columns must hold one value per
row.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning

from vo_service.catalogs.columns import (
    CatalogError,
    ColumnInfo,
    check_positions,
    check_scalar,
    choose_columns,
    column_info,
    parse_angle,
    read_angles,
    read_sizes,
    target_ids,
)
from vo_service.catalogs.safety import check_column_count, check_fits_columns, check_votable

__all__ = ["Catalog", "CatalogError", "CatalogSummary", "ColumnInfo", "describe_catalog",
           "parse_angle", "read_catalog", "read_table"]

# Python's csv module refuses longer fields (csv.field_size_limit); said so in the README.
MAX_FIELD_CHARS = 131_072


@dataclass
class Catalog:
    """Targets read from a catalog: positions in ICRS degrees, one entry per row."""

    format: str  # 'votable', 'fits', 'csv' or 'tsv'
    columns: list[ColumnInfo]
    ra_column: str
    dec_column: str
    id_column: str | None
    size_column: str | None
    ids: list[str]
    ra: np.ndarray
    dec: np.ndarray
    size: np.ndarray | None = None
    size_unit: str = "pix"
    row_problems: dict[int, str] = field(default_factory=dict)
    size_unit_explicit: bool = False  # the unit came from the column's unit or name suffix

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def column_names(self) -> list[str]:
        """Every column name, in file order."""
        return [column.name for column in self.columns]

    @property
    def good_rows(self) -> np.ndarray:
        """Indices (0-based) of the rows without problems."""
        return np.array([i for i in range(len(self)) if i not in self.row_problems], dtype=int)


@dataclass(frozen=True)
class CatalogSummary:
    """What the web page shows after an upload: columns, row count, preselected columns."""

    format: str
    n_rows: int
    columns: list[ColumnInfo]
    ra_column: str | None
    dec_column: str | None
    id_column: str | None
    size_column: str | None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


# --- reading the table -----------------------------------------------------------------


def _as_bytes(source: bytes | Path | str, filename: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), filename or "the catalog"
    path = Path(source)
    try:
        return path.read_bytes(), filename or path.name
    except OSError as error:
        raise CatalogError(f"cannot read the catalog file {path}: {error.strerror}") from None


def _detect_format(data: bytes) -> str:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:200]:
        if b"<\x00" in head[:8] or b"\x00<" in head[:8]:
            raise CatalogError("the VOTable is UTF-16 encoded; save it as UTF-8")
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or _utf16_text(head[:200]):
            raise CatalogError("the catalog is UTF-16 encoded text; save it as UTF-8 (CSV "
                               "or TSV with a header line)")
        raise CatalogError("unrecognised catalog format: expected a VOTable, a FITS table "
                           "or CSV/TSV text with a header line")
    if re.match(rb"[\[{]\s*[\"\[{]", head):  # a JSON object or list, not a header line
        raise CatalogError("JSON is not a catalog format this service reads: upload a "
                           "VOTable, a FITS table or CSV/TSV text with a header line")
    if head[:1] == b"<":
        return "votable"
    return "text"


def _utf16_text(head: bytes) -> bool:
    """Whether ``head`` reads as UTF-16 text without a byte-order mark: every other byte a
    NUL, the others printable ASCII."""
    for zeros, text in ((head[0::2], head[1::2]), (head[1::2], head[0::2])):
        if zeros and not zeros.strip(b"\x00") and text.isascii() and \
                text.decode("ascii").replace("\r", "").replace("\n", "").replace(
                    "\t", "").isprintable():
            return True
    return False


def _read_votable(data: bytes, name: str, max_columns: int) -> Table:
    check_votable(data, name, max_columns)  # before astropy could follow any reference
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            votable = parse_votable(io.BytesIO(data), verify="ignore")
            tables = list(votable.iter_tables())
            if not tables:
                raise CatalogError(f"{name}: the VOTable holds no TABLE; upload one with a table")
            return tables[0].to_table(use_names_over_ids=True)
    except CatalogError:
        raise
    except Exception as error:  # the parser raises many types for malformed XML
        raise CatalogError(f"{name}: malformed VOTable ({error}); check that it is "
                           "well-formed VOTable XML") from None


def _read_fits(data: bytes, name: str, max_columns: int) -> Table:
    check_fits_columns(data, name, max_columns)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            hdul = fits.open(io.BytesIO(data), memmap=False)
            for hdu in hdul:
                if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
                    return Table.read(hdu)
    except Exception as error:
        raise CatalogError(f"{name}: malformed FITS file ({error}); check that the upload is "
                           "complete and is a FITS table") from None
    if _has_table_header(data):  # astropy drops a table whose data would pass the end
        raise CatalogError(f"{name}: its table extension is damaged: the header (NAXIS1, "
                           "NAXIS2, TFORMn) describes more data than the file holds; check "
                           "that the upload is complete, or write the table again")
    raise CatalogError(f"{name}: the FITS file holds no table extension; upload a FITS file with "
                       "a binary or ASCII table (not an image)")


def _has_table_header(data: bytes) -> bool:
    """Whether a FITS block after the first starts a table extension's header."""
    return any(data.startswith((b"XTENSION= 'BINTABLE'", b"XTENSION= 'TABLE   '"), start)
               for start in range(2880, len(data), 2880))


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _csv_rows(lines: list[str], delimiter: str, name: str) -> list[list[str]]:
    """Every row split into cells; a cell over ``MAX_FIELD_CHARS`` is a CatalogError."""
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        return list(reader)
    except csv.Error as error:  # e.g. "field larger than field limit"; never quotes cells
        what = (f"a field longer than {MAX_FIELD_CHARS:,} characters"
                if "field limit" in str(error) else "text that is not valid CSV")
        where = "the header line" if reader.line_num <= 1 else f"row {reader.line_num - 1}"
        raise CatalogError(f"{name}: {where} holds {what}; check the quoting of that "
                           "row") from None


def _read_text(data: bytes, name: str, max_rows: int,
               max_columns: int) -> tuple[Table, str, dict[int, str]]:
    """CSV/TSV with a header line; '#' lines are comments. Every cell is kept as text."""
    lines = [line for line in _decode(data).splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise CatalogError(f"{name} is empty; upload a catalog with a header line and rows")
    _check_count(len(lines) - 1, max_rows)  # before parsing every cell
    header_line = lines[0]
    delimiter = max("\t,;|", key=header_line.count)
    if header_line.count(delimiter) == 0 and len(lines) > 1:
        raise CatalogError(f"{name}: unrecognised format; a CSV catalog needs a header line "
                           "of column names separated by commas (or tabs)")
    check_column_count(len(_csv_rows(lines[:1], delimiter, name)[0]), name, max_columns)
    rows = _csv_rows(lines, delimiter, name)  # after the cheap checks of the header
    header = [cell.strip() for cell in rows[0]]
    if len(set(header)) != len(header) or not all(header):
        raise CatalogError(f"{name}: the header line must name every column once, got "
                           f"{', '.join(repr(h) for h in header)}")
    problems: dict[int, str] = {}
    cells = []
    for index, row in enumerate(rows[1:]):
        if len(row) != len(header):
            problems[index] = f"row has {len(row)} fields, the header has {len(header)}"
            row = (row + [""] * len(header))[: len(header)]
        cells.append([cell.strip() for cell in row])
    columns = list(zip(*cells, strict=True)) if cells else [()] * len(header)
    table = Table([np.array(col, dtype=str) for col in columns], names=header)
    return table, "tsv" if delimiter == "\t" else "csv", problems


def _load(data: bytes, name: str, max_rows: int,
          max_columns: int) -> tuple[Table, str, dict[int, str]]:
    if not data.strip():
        raise CatalogError(f"{name} is empty; upload a catalog with a header line and rows")
    kind = _detect_format(data)
    if kind == "fits":
        return _read_fits(data, name, max_columns), "fits", {}
    if kind == "votable":
        return _read_votable(data, name, max_columns), "votable", {}
    return _read_text(data, name, max_rows, max_columns)


def _check_count(n_rows: int, max_rows: int) -> None:
    if n_rows > max_rows:
        raise CatalogError(f"catalog has {n_rows:,} rows; the limit is {max_rows:,}; "
                           "split it into smaller catalogs")


def _check_rows(table: Table, name: str, max_rows: int) -> None:
    if len(table) == 0:
        raise CatalogError(f"{name} has columns but no rows; add at least one target")
    _check_count(len(table), max_rows)


# --- public API ------------------------------------------------------------------------


def read_table(source: bytes | Path, *, filename: str | None = None, max_rows: int = 10_000,
               max_columns: int = 1_000) -> Table:
    """The first table of a VOTable, FITS table or CSV/TSV file (text cells stay text),
    with the same safety checks as :func:`read_catalog`; ephemerides are read with it."""
    data, name = _as_bytes(source, filename)
    table, _, problems = _load(data, name, max_rows, max_columns)
    _check_rows(table, name, max_rows)
    if problems:
        row, text = next(iter(sorted(problems.items())))
        raise CatalogError(f"{name}: row {row + 1}: {text}")
    return table


def read_catalog(
    source: bytes | Path,
    *,
    filename: str | None = None,
    ra_column: str | None = None,
    dec_column: str | None = None,
    id_column: str | None = None,
    size_column: str | None = None,
    max_rows: int = 10_000,
    max_columns: int = 1_000,
) -> Catalog:
    """Read a VOTable, FITS table or CSV/TSV catalog of targets.

    Columns named by the caller must exist (case-insensitive); otherwise they are found by
    UCD, then by common names. Without an ID column, IDs are row numbers from 1.

    Raises
    ------
    CatalogError
        Empty, malformed or unrecognised file; a VOTable with DTD/entity declarations or
        external references; a named column that does not exist; no RA/Dec column; an
        RA/Dec/ID/size column holding arrays; more than ``max_rows`` rows or
        ``max_columns`` columns; a CSV field over ``MAX_FIELD_CHARS`` characters.
    """
    data, name = _as_bytes(source, filename)
    table, fmt, problems = _load(data, name, max_rows, max_columns)
    _check_rows(table, name, max_rows)
    ra_name, dec_name, id_name, size_name = choose_columns(
        table, ra_column, dec_column, id_column, size_column
    )
    if ra_name is None or dec_name is None:
        missing = " and ".join(w for w, c in (("RA", ra_name), ("Dec", dec_name)) if c is None)
        raise CatalogError(
            f"no {missing} column found in {name}; name it ra/dec (or RAJ2000/DEJ2000), give "
            f"it the UCD pos.eq.ra;meta.main / pos.eq.dec;meta.main, or choose it; available "
            f"columns: {', '.join(table.colnames)}"
        )
    for role, column_name in (("RA", ra_name), ("Dec", dec_name), ("ID", id_name),
                              ("size", size_name)):
        if column_name is not None:
            check_scalar(table[column_name], role)
    ra = read_angles(table[ra_name], is_ra=True, problems=problems)
    dec = read_angles(table[dec_name], is_ra=False, problems=problems)
    check_positions(ra, dec, problems)
    sizes, size_unit, explicit = (None, "pix", False)
    if size_name is not None:
        sizes, size_unit, explicit = read_sizes(table[size_name], problems)
    return Catalog(
        format=fmt,
        columns=column_info(table, fmt),
        ra_column=ra_name,
        dec_column=dec_name,
        id_column=id_name,
        size_column=size_name,
        ids=target_ids(table[id_name] if id_name else None, len(table)),
        ra=ra,
        dec=dec,
        size=sizes,
        size_unit=size_unit,
        row_problems=dict(sorted(problems.items())),
        size_unit_explicit=explicit,
    )


def describe_catalog(
    source: bytes | Path, filename: str | None = None, *, max_rows: int = 10_000,
    max_columns: int = 1_000,
) -> CatalogSummary:
    """Columns, row count and the preselected RA/Dec/ID/size columns (None when not found).

    Raises :class:`CatalogError` for files that cannot be read at all (as ``read_catalog``).
    """
    data, name = _as_bytes(source, filename)
    table, fmt, _ = _load(data, name, max_rows, max_columns)
    _check_rows(table, name, max_rows)
    ra_name, dec_name, id_name, size_name = choose_columns(table, None, None, None, None)
    return CatalogSummary(fmt, len(table), column_info(table, fmt), ra_name, dec_name,
                          id_name, size_name)
