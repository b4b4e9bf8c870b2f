"""Reading uploaded target catalogs: VOTable, FITS table, CSV/TSV.

The format is recognised from the content (``SIMPLE  =`` → FITS, ``<?xml``/``<VOTABLE`` →
VOTable, other text → CSV or TSV); the RA, Dec, ID and size columns are found by UCD, then by
common names, unless named by the caller. Positions become ICRS degrees (sexagesimal text
is read with astropy; RA in hours when sexagesimal without unit letters). A bad row (missing
or out-of-range position, unreadable text) is kept and reported in ``row_problems``; only a
problem with the whole file raises :class:`CatalogError`, whose message says what to fix.

XML safety: a VOTable never needs a DTD, so any ``<!DOCTYPE``/``<!ENTITY`` is refused before
the parser sees the file (no entity expansion, no external entity fetched).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.io.votable import parse as parse_votable
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning

RA_NAMES = ("ra", "ra_deg", "radeg", "raj2000", "_raj2000", "ra_icrs", "ra_j2000", "ra2000",
            "alpha", "alpha_j2000", "s_ra", "ra_obj", "target_ra", "ra_targ")
DEC_NAMES = ("dec", "dec_deg", "decdeg", "dej2000", "_dej2000", "decj2000", "dec_icrs",
             "dec_j2000", "dec2000", "decl", "delta", "delta_j2000", "de", "s_dec", "dec_obj",
             "target_dec", "dec_targ")
ID_NAMES = ("id", "name", "objid", "obj", "src", "obj_id", "object_id", "source_id",
            "sourceid", "target", "target_name", "targetname", "object", "objname", "main_id",
            "designation", "source", "ident", "identifier")
SIZE_NAMES = ("size", "cutout_size", "size_pix", "size_pixels", "size_arcsec", "size_arcmin",
              "size_deg", "width")
SIZE_NAME_UNITS = {"arcsec": "arcsec", "arcmin": "arcmin", "deg": "deg", "pix": "pix"}
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# IDs reach XML (manifests) where these characters cannot be written: replaced by "?".
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_SEXAGESIMAL = re.compile(r"\d\s*[:\s]\s*\d|\d\s*[hdms°]", re.IGNORECASE)


class CatalogError(ValueError):
    """A catalog that cannot be used as a whole; the message says what to fix."""


@dataclass(frozen=True)
class ColumnInfo:
    """One column as the web page shows it."""

    name: str
    datatype: str  # 'int', 'float', 'bool' or 'str'
    unit: str | None = None
    ucd: str | None = None


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
        raise CatalogError("unrecognised catalog format: expected a VOTable, a FITS table "
                           "or CSV/TSV text with a header line")
    if head[:1] == b"<":
        return "votable"
    return "text"


def _read_votable(data: bytes, name: str) -> Table:
    if _DTD.search(data):
        raise CatalogError(f"{name}: VOTables with a DOCTYPE or ENTITY declaration are refused "
                           "(entity expansion is unsafe); remove the declaration")
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


def _read_fits(data: bytes, name: str) -> Table:
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
    raise CatalogError(f"{name}: the FITS file holds no table extension; upload a FITS file with "
                       "a binary or ASCII table (not an image)")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_text(data: bytes, name: str, max_rows: int) -> tuple[Table, str, dict[int, str]]:
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
    rows = list(csv.reader(lines, delimiter=delimiter))
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


def _load(data: bytes, name: str, max_rows: int) -> tuple[Table, str, dict[int, str]]:
    if not data.strip():
        raise CatalogError(f"{name} is empty; upload a catalog with a header line and rows")
    kind = _detect_format(data)
    if kind == "fits":
        return _read_fits(data, name), "fits", {}
    if kind == "votable":
        return _read_votable(data, name), "votable", {}
    return _read_text(data, name, max_rows)


# --- describing and choosing columns ---------------------------------------------------


def _text_datatype(values: np.ndarray) -> str:
    present = [v for v in values if v != ""]
    if not present:
        return "str"
    for kind, convert in (("int", int), ("float", float)):
        try:
            for value in present:
                convert(value)
            return kind
        except ValueError:
            continue
    return "str"


def _column_info(table: Table, fmt: str) -> list[ColumnInfo]:
    infos = []
    for column in table.itercols():
        kind = column.dtype.kind
        if kind in "US" and fmt in ("csv", "tsv"):
            datatype = _text_datatype(np.asarray(column))
        else:
            datatype = {"i": "int", "u": "int", "f": "float", "b": "bool"}.get(kind, "str")
        unit = str(column.unit) if column.unit is not None else None
        infos.append(ColumnInfo(column.name, datatype, unit, column.meta.get("ucd")))
    return infos


def _find_named(table: Table, requested: str, role: str) -> str:
    if requested in table.colnames:
        return requested
    folded = {name.lower(): name for name in table.colnames}
    if requested.lower() in folded:
        return folded[requested.lower()]
    raise CatalogError(f"the {role} column {requested!r} does not exist; available columns: "
                       f"{', '.join(table.colnames)}")


def _guess(table: Table, ucds: tuple[str, ...], names: tuple[str, ...]) -> str | None:
    for ucd in ucds:
        for column in table.itercols():
            if (column.meta.get("ucd") or "").lower() == ucd:
                return column.name
    for ucd in ucds:  # a partial UCD such as 'pos.eq.ra' without meta.main
        for column in table.itercols():
            if (column.meta.get("ucd") or "").lower().split(";")[0] == ucd.split(";")[0]:
                return column.name
    folded = {name.lower(): name for name in table.colnames}
    for name in names:
        if name in folded:
            return folded[name]
    return None


def _choose(table: Table, requested: str | None, role: str, ucds: tuple[str, ...],
            names: tuple[str, ...]) -> str | None:
    if requested:
        return _find_named(table, requested, role)
    return _guess(table, ucds, names)


def _choose_all(table, ra_column, dec_column, id_column, size_column):
    return (
        _choose(table, ra_column, "RA", ("pos.eq.ra;meta.main", "pos.eq.ra"), RA_NAMES),
        _choose(table, dec_column, "Dec", ("pos.eq.dec;meta.main", "pos.eq.dec"), DEC_NAMES),
        _choose(table, id_column, "ID", ("meta.id;meta.main", "meta.id"), ID_NAMES),
        _choose(table, size_column, "size", ("phys.angsize",), SIZE_NAMES),
    )


# --- converting values -----------------------------------------------------------------


def _cells(column) -> list:
    """Python values of a column, None where masked."""
    mask = np.ma.getmaskarray(column)
    values = np.asarray(column)
    return [None if masked else value for value, masked in zip(values, mask, strict=True)]


def _angles(column, *, is_ra: bool, problems: dict[int, str]) -> np.ndarray:
    """Degrees from a numeric or text column; unreadable cells give NaN and a problem."""
    role = "RA" if is_ra else "Dec"
    degrees = np.full(len(column), np.nan)
    column_unit = column.unit if column.unit is not None else None
    scale = 1.0
    if column_unit is not None and column.dtype.kind in "iuf":
        try:
            scale = (1.0 * u.Unit(column_unit)).to_value(u.deg)
        except (ValueError, u.UnitsError):
            scale = 1.0  # an unknown or non-angular unit: take the numbers as degrees
    for row, value in enumerate(_cells(column)):
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.setdefault(row, f"{role} is missing")
            continue
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            degrees[row] = float(value) * scale
            continue
        text = value.strip()
        try:
            degrees[row] = float(text)
            continue
        except ValueError:
            pass
        if not _SEXAGESIMAL.search(text):
            problems.setdefault(row, f"cannot read {role} {text!r} as an angle")
            continue
        try:
            unit = u.hourangle if is_ra else u.deg
            degrees[row] = Angle(text, unit=unit).deg
        except (ValueError, u.UnitsError):
            problems.setdefault(row, f"cannot read {role} {text!r} as an angle")
    return degrees


def parse_angle(text: str, *, is_ra: bool) -> float:
    """Degrees from decimal degrees or sexagesimal text (RA in hours unless unit letters say
    otherwise); ValueError with what was expected."""
    problems: dict[int, str] = {}
    degrees = _angles(Table({"x": np.array([text.strip()], dtype=str)})["x"], is_ra=is_ra,
                      problems=problems)
    if problems:
        example = "83.82 or 05:35:17.3" if is_ra else "-5.39 or -05:23:28"
        raise ValueError(f"{problems[0]}; give degrees or sexagesimal text, e.g. {example}")
    return float(degrees[0])


def _check_positions(ra: np.ndarray, dec: np.ndarray, problems: dict[int, str]) -> None:
    for row in np.flatnonzero(~np.isfinite(ra) | ~np.isfinite(dec)):
        problems.setdefault(int(row), "RA or Dec is not a finite number")
    for row in np.flatnonzero(np.isfinite(ra) & ((ra < 0) | (ra >= 360))):
        problems.setdefault(int(row), f"RA {ra[row]:g} is outside [0, 360) degrees")
    for row in np.flatnonzero(np.isfinite(dec) & (np.abs(dec) > 90)):
        problems.setdefault(int(row), f"Dec {dec[row]:g} is outside [-90, 90] degrees")


def _sizes(column, problems: dict[int, str]) -> tuple[np.ndarray, str, bool]:
    """Sizes, their unit ('pix' unless the column unit or name says an angle) and whether
    the unit was stated (by a column unit or a name suffix such as ``_arcsec``)."""
    unit, scale, explicit = "pix", 1.0, True
    if column.unit is not None:
        try:
            scale = (1.0 * u.Unit(column.unit)).to_value(u.arcsec)
            unit = "arcsec"
        except (ValueError, u.UnitsError):
            unit = "pix"  # 'pix', 'pixel' or a unit astropy does not know
    else:
        suffix = column.name.lower().rsplit("_", 1)[-1]
        unit = SIZE_NAME_UNITS.get(suffix, "pix")
        explicit = suffix in SIZE_NAME_UNITS
    sizes = np.full(len(column), np.nan)
    for row, value in enumerate(_cells(column)):
        try:
            sizes[row] = float(value) * scale
        except (TypeError, ValueError):
            if value not in (None, ""):
                problems.setdefault(row, f"cannot read size {value!r} as a number")
            continue
        if not (np.isfinite(sizes[row]) and sizes[row] > 0):
            problems.setdefault(row, f"size {value!r} is not a positive number")
    return sizes, unit, explicit


def _ids(column, n_rows: int) -> list[str]:
    if column is None:
        return [str(row + 1) for row in range(n_rows)]
    ids = []
    for row, value in enumerate(_cells(column)):
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        text = "" if value is None else _NOT_XML.sub("?", str(value)).strip()
        ids.append(text or str(row + 1))
    return ids


def _check_count(n_rows: int, max_rows: int) -> None:
    if n_rows > max_rows:
        raise CatalogError(f"catalog has {n_rows:,} rows; the limit is {max_rows:,}; "
                           "split it into smaller catalogs")


def _check_rows(table: Table, name: str, max_rows: int) -> None:
    if len(table) == 0:
        raise CatalogError(f"{name} has columns but no rows; add at least one target")
    _check_count(len(table), max_rows)


# --- public API ------------------------------------------------------------------------


def read_catalog(
    source: bytes | Path,
    *,
    filename: str | None = None,
    ra_column: str | None = None,
    dec_column: str | None = None,
    id_column: str | None = None,
    size_column: str | None = None,
    max_rows: int = 10_000,
) -> Catalog:
    """Read a VOTable, FITS table or CSV/TSV catalog of targets.

    Columns named by the caller must exist (case-insensitive); otherwise they are found by
    UCD, then by common names. Without an ID column, IDs are row numbers from 1.

    Raises
    ------
    CatalogError
        Empty, malformed or unrecognised file; a VOTable with DTD/entity declarations; a
        named column that does not exist; no RA/Dec column; more than ``max_rows`` rows.
    """
    data, name = _as_bytes(source, filename)
    table, fmt, problems = _load(data, name, max_rows)
    _check_rows(table, name, max_rows)
    ra_name, dec_name, id_name, size_name = _choose_all(
        table, ra_column, dec_column, id_column, size_column
    )
    if ra_name is None or dec_name is None:
        missing = " and ".join(w for w, c in (("RA", ra_name), ("Dec", dec_name)) if c is None)
        raise CatalogError(
            f"no {missing} column found in {name}; name it ra/dec (or RAJ2000/DEJ2000), give "
            f"it the UCD pos.eq.ra;meta.main / pos.eq.dec;meta.main, or choose it; available "
            f"columns: {', '.join(table.colnames)}"
        )
    ra = _angles(table[ra_name], is_ra=True, problems=problems)
    dec = _angles(table[dec_name], is_ra=False, problems=problems)
    _check_positions(ra, dec, problems)
    sizes, size_unit, explicit = (None, "pix", False)
    if size_name is not None:
        sizes, size_unit, explicit = _sizes(table[size_name], problems)
    return Catalog(
        format=fmt,
        columns=_column_info(table, fmt),
        ra_column=ra_name,
        dec_column=dec_name,
        id_column=id_name,
        size_column=size_name,
        ids=_ids(table[id_name] if id_name else None, len(table)),
        ra=ra,
        dec=dec,
        size=sizes,
        size_unit=size_unit,
        row_problems=dict(sorted(problems.items())),
        size_unit_explicit=explicit,
    )


def describe_catalog(
    source: bytes | Path, filename: str | None = None, *, max_rows: int = 10_000
) -> CatalogSummary:
    """Columns, row count and the preselected RA/Dec/ID/size columns (None when not found).

    Raises :class:`CatalogError` for files that cannot be read at all (as ``read_catalog``).
    """
    data, name = _as_bytes(source, filename)
    table, fmt, _ = _load(data, name, max_rows)
    _check_rows(table, name, max_rows)
    ra_name, dec_name, id_name, size_name = _choose_all(table, None, None, None, None)
    return CatalogSummary(fmt, len(table), _column_info(table, fmt), ra_name, dec_name,
                          id_name, size_name)
