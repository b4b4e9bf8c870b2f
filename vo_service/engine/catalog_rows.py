"""Rows of a source catalog inside a stamp's footprint (pure table and WCS work).

A catalog file is a FITS binary table (or a VOTable) with RA/Dec columns (common names,
any case: ``RA``/``DEC``, ``RIGHT_ASCENSION``/``DECLINATION``, ``ALPHA_J2000``/
``DELTA_J2000``, ...). The stamp's footprint is its pixel box on the matching image: a
source is inside when its position, mapped through the image's WCS (distortions included),
falls on one of the box's pixels (0-based pixel p covers [p - 0.5, p + 0.5)). The rows
come back with the columns asked for (all by default) and two added ones, ``x_stamp`` and
``y_stamp``: the source's 1-based FITS pixel position in the stamp, as the stamp's own WCS
gives it. Without a matching image the footprint is the requested circle itself (no pixel
positions then).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.votable.tree import Info
from astropy.table import Table
from astropy.wcs import WCS
from numpy.typing import NDArray

from vo_service.engine import sphere

X_COLUMN, Y_COLUMN = "x_stamp", "y_stamp"
RA_NAMES = ("ra", "right_ascension", "alpha_j2000", "ra_deg", "raj2000")
DEC_NAMES = ("dec", "declination", "delta_j2000", "dec_deg", "dej2000", "decj2000")
VOTABLE_SUFFIXES = (".xml", ".vot", ".votable")


def column_named(names: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The first of ``wanted`` (lower case) among ``names``, compared case-insensitively."""
    folded = {name.lower(): name for name in names}
    return next((folded[w] for w in wanted if w in folded), None)


def position_columns(names: Sequence[str]) -> tuple[str, str] | None:
    """The RA and Dec column names of a table (case-insensitive common names), or None."""
    ra, dec = column_named(names, RA_NAMES), column_named(names, DEC_NAMES)
    return (ra, dec) if ra and dec else None


class CatalogRowsError(ValueError):
    """A catalog file or a column choice that cannot be used; the message says why."""


def table_hdu_of(hdul: fits.HDUList) -> int | None:
    """The first table HDU with RA/Dec columns, or None."""
    for index, hdu in enumerate(hdul):
        if isinstance(hdu, fits.BinTableHDU | fits.TableHDU) and position_columns(
                hdu.columns.names):
            return index
    return None


class SourceCatalog:
    """A catalog file opened once: its positions (for selections) and its rows (memory
    mapped for FITS, read on demand)."""

    def __init__(self, path: str | Path, hdu: int | None = None) -> None:
        self.path = Path(path)
        self._hdul = None
        if self.path.name.lower().endswith(VOTABLE_SUFFIXES):
            from astropy.io.votable import parse_single_table

            self.table = parse_single_table(str(self.path)).to_table()
            self.hdu = 0
        else:
            self._hdul = fits.open(self.path, memmap=True)
            found = table_hdu_of(self._hdul) if hdu is None else hdu
            if found is None:
                self.close()
                raise CatalogRowsError(f"{self.path.name}: no table with RA/Dec columns")
            self.hdu = found
            self.table = None
        names = self.column_names
        columns = position_columns(names)
        if columns is None:
            self.close()
            raise CatalogRowsError(f"{self.path.name}: no RA/Dec columns among {names[:12]}")
        self.ra_column, self.dec_column = columns
        self.ra = np.asarray(self._column(self.ra_column), dtype=np.float64)
        self.dec = np.asarray(self._column(self.dec_column), dtype=np.float64)
        self._xyz = sphere.radec_to_xyz(np.nan_to_num(self.ra, nan=0.0),
                                        np.nan_to_num(self.dec, nan=-90.0))
        self._tree = None

    @property
    def column_names(self) -> list[str]:
        """Every column of the catalog, in file order."""
        if self.table is not None:
            return list(self.table.colnames)
        assert self._hdul is not None
        return list(self._hdul[self.hdu].columns.names)

    def _column(self, name: str) -> NDArray:
        if self.table is not None:
            return np.asarray(self.table[name])
        assert self._hdul is not None
        return self._hdul[self.hdu].data[name]

    def __len__(self) -> int:
        return len(self.ra)

    def close(self) -> None:
        """Close the file."""
        if self._hdul is not None:
            self._hdul.close()

    def __enter__(self) -> SourceCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def near(self, ra: float, dec: float, radius_deg: float) -> NDArray[np.int64]:
        """Rows within ``radius_deg`` of a position (finite positions only), sorted."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self._xyz)
        chord = 2.0 * math.sin(math.radians(min(radius_deg, 180.0)) / 2.0)
        centre = sphere.radec_to_xyz(ra, dec)
        rows = np.array(sorted(self._tree.query_ball_point(centre, chord)), dtype=np.int64)
        finite = np.isfinite(self.ra[rows]) & np.isfinite(self.dec[rows])
        return rows[finite]

    def check_columns(self, wanted: Sequence[str] | None) -> list[str]:
        """The column names to return: all, or ``wanted`` matched case-insensitively
        (CatalogRowsError names the unknown ones and lists what there is)."""
        names = self.column_names
        if not wanted:
            return names
        folded = {name.lower(): name for name in names}
        unknown = [w for w in wanted if w.lower() not in folded]
        if unknown:
            shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
            raise CatalogRowsError(f"the catalog has no column(s) {', '.join(unknown)}; its "
                                   f"columns are {shown}")
        return list(dict.fromkeys(folded[w.lower()] for w in wanted))

    def rows(self, indices: NDArray[np.int64], columns: Sequence[str]) -> Table:
        """The chosen rows and columns as an astropy Table (units kept)."""
        if self.table is not None:
            return self.table[list(columns)][indices]
        assert self._hdul is not None
        hdu = self._hdul[self.hdu]
        selected = hdu.data[indices] if len(indices) else hdu.data[:0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = Table(selected)
        return table[list(columns)]


@dataclass(frozen=True)
class RowSelection:
    """The catalog rows inside one stamp footprint and their positions in the stamp."""

    rows: NDArray[np.int64]
    x_stamp: NDArray[np.float64] | None  # 1-based FITS pixel coordinates in the stamp
    y_stamp: NDArray[np.float64] | None


def rows_in_box(catalog: SourceCatalog, wcs: WCS, ranges: Sequence[tuple[int, int]],
                ) -> RowSelection:
    """Rows whose position falls on the pixel box ``ranges`` ((x0, x1), (y0, y1), 0-based
    half-open) of the image with celestial ``wcs``."""
    (x0, x1), (y0, y1) = ranges[0], ranges[1]
    centre = wcs.celestial.all_pix2world([[(x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0]], 0)[0]
    corners = wcs.celestial.all_pix2world(
        [[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y0 - 0.5], [x0 - 0.5, y1 - 0.5],
         [x1 - 0.5, y1 - 0.5]], 0)
    reach = float(np.max(sphere.angular_distance(centre[0], centre[1], corners[:, 0],
                                                 corners[:, 1])))
    candidates = catalog.near(float(centre[0]), float(centre[1]), reach * 1.05 + 1e-6)
    if not len(candidates):
        return RowSelection(candidates, np.zeros(0), np.zeros(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = wcs.celestial.all_world2pix(catalog.ra[candidates], catalog.dec[candidates], 0)
    inside = ((x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
              & np.isfinite(x) & np.isfinite(y))
    return RowSelection(candidates[inside], x[inside] - x0 + 1.0, y[inside] - y0 + 1.0)


def rows_in_circle(catalog: SourceCatalog, ra: float, dec: float, radius_deg: float
                   ) -> RowSelection:
    """Rows within a circle on the sky (no stamp, so no pixel positions)."""
    rows = catalog.near(ra, dec, radius_deg * 1.000001)
    distance = sphere.angular_distance(ra, dec, catalog.ra[rows], catalog.dec[rows])
    return RowSelection(rows[distance <= radius_deg], None, None)


def selection_table(catalog: SourceCatalog, selection: RowSelection,
                    columns: Sequence[str]) -> Table:
    """The selected rows with the chosen columns, plus ``x_stamp``/``y_stamp`` when the
    selection has pixel positions (a name already taken gets a ``_1`` suffix)."""
    table = catalog.rows(selection.rows, columns)
    if selection.x_stamp is not None and selection.y_stamp is not None:
        for name, values, axis in ((X_COLUMN, selection.x_stamp, "x"),
                                   (Y_COLUMN, selection.y_stamp, "y")):
            free = name if name not in table.colnames else f"{name}_1"
            table[free] = values
            table[free].unit = "pix"
            table[free].description = (f"1-based FITS pixel {axis} of the source in the "
                                       "image stamp (the stamp's own WCS)")
    return table


def fits_table_bytes(table: Table, cards: Sequence[tuple[str, object, str]]) -> bytes:
    """A FITS file: empty primary HDU with ``cards``, then the rows as a binary table."""
    primary = fits.PrimaryHDU()
    for key, value, comment in cards:
        primary.header[key] = (value, comment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = fits.table_to_hdu(table)
    rows.name = "ROWS"
    for key, value, comment in cards:
        rows.header[key] = (value, comment)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        fits.HDUList([primary, rows]).writeto(buffer)
    return buffer.getvalue()


def votable_bytes(table: Table, cards: Sequence[tuple[str, object, str]]) -> bytes:
    """A VOTable 1.4 of the rows with one INFO per card (name, value)."""
    from astropy.io.votable import from_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        votable = from_table(table)
    votable.version = "1.4"
    resource = votable.resources[0]
    resource.type = "results"
    for key, value, comment in cards:
        info = Info(name=key, value=str(value))
        info.content = comment or None
        resource.infos.append(info)
    buffer = io.BytesIO()
    votable.to_xml(buffer, tabledata_format="tabledata")
    return buffer.getvalue()
