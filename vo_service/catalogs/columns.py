"""Finding a catalog's columns and reading their values.

The RA, Dec, ID and size columns are found by UCD, then by common names, unless named by
the caller. Positions become ICRS degrees (sexagesimal text is read with astropy; RA in hours
when sexagesimal without unit letters); a cell that cannot be read is a per-row problem, not
an error. Reading the file itself is :mod:`vo_service.catalogs`, which re-exports the public
names here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle
from astropy.table import Table

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


def column_info(table: Table, fmt: str) -> list[ColumnInfo]:
    """Name, datatype, unit and UCD of every column (CSV text columns typed by content)."""
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


def choose_columns(table: Table, ra_column: str | None, dec_column: str | None,
                   id_column: str | None, size_column: str | None
                   ) -> tuple[str | None, str | None, str | None, str | None]:
    """The RA, Dec, ID and size column names: as requested (must exist), else found by
    UCD, then by common names; None when not found."""
    return (
        _choose(table, ra_column, "RA", ("pos.eq.ra;meta.main", "pos.eq.ra"), RA_NAMES),
        _choose(table, dec_column, "Dec", ("pos.eq.dec;meta.main", "pos.eq.dec"), DEC_NAMES),
        _choose(table, id_column, "ID", ("meta.id;meta.main", "meta.id"), ID_NAMES),
        _choose(table, size_column, "size", ("phys.angsize",), SIZE_NAMES),
    )


# --- converting values -----------------------------------------------------------------


def check_scalar(column, role: str) -> None:
    """Refuse a column holding an array per row: a vector (FITS ``2D``, VOTable
    ``arraysize="2"``) or variable-length arrays (FITS ``PD()``, VOTable ``arraysize="*"``
    of numbers); text columns are scalars."""
    vector = column.ndim > 1
    if not vector and column.dtype.kind == "O":
        vector = any(isinstance(value, np.ndarray | list | tuple) for value in _cells(column))
    if vector:
        raise CatalogError(f"the {role} column {column.name!r} holds an array in each row; "
                           f"choose a {role} column with one value per row")


def _cells(column) -> list:
    """Python values of a column, None where masked."""
    mask = np.ma.getmaskarray(column)
    values = np.asarray(column)
    return [None if masked else value for value, masked in zip(values, mask, strict=True)]


def read_angles(column, *, is_ra: bool, problems: dict[int, str]) -> np.ndarray:
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
    if column.dtype.kind in "iufUS" and not np.ma.is_masked(column):
        try:  # every cell a number (or decimal text): all at once, as the loop would
            return np.asarray(column).astype(float) * scale
        except ValueError:  # an empty, sexagesimal or unreadable cell: cell by cell
            pass
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
    degrees = read_angles(Table({"x": np.array([text.strip()], dtype=str)})["x"], is_ra=is_ra,
                      problems=problems)
    if problems:
        example = "83.82 or 05:35:17.3" if is_ra else "-5.39 or -05:23:28"
        raise ValueError(f"{problems[0]}; give degrees or sexagesimal text, e.g. {example}")
    return float(degrees[0])


def check_positions(ra: np.ndarray, dec: np.ndarray, problems: dict[int, str]) -> None:
    """Record rows whose position is not finite or out of range in ``problems``."""
    for row in np.flatnonzero(~np.isfinite(ra) | ~np.isfinite(dec)):
        problems.setdefault(int(row), "RA or Dec is not a finite number")
    for row in np.flatnonzero(np.isfinite(ra) & ((ra < 0) | (ra >= 360))):
        problems.setdefault(int(row), f"RA {ra[row]:g} is outside [0, 360) degrees")
    for row in np.flatnonzero(np.isfinite(dec) & (np.abs(dec) > 90)):
        problems.setdefault(int(row), f"Dec {dec[row]:g} is outside [-90, 90] degrees")


def read_sizes(column, problems: dict[int, str]) -> tuple[np.ndarray, str, bool]:
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


def target_ids(column, n_rows: int) -> list[str]:
    """IDs as text safe for XML; row numbers (from 1) where missing or without a column."""
    if column is None:
        return [str(row + 1) for row in range(n_rows)]
    ids = []
    for row, value in enumerate(_cells(column)):
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        text = "" if value is None else _NOT_XML.sub("?", str(value)).strip()
        ids.append(text or str(row + 1))
    return ids
