"""PSF models of an archive and the PSF at a target (pure FITS and array work; the
answer's FITS bytes are written by ``engine/psf_fits.py``).

Two layouts are read (see ``docs/products.md``):

- a **PSF grid** (Euclid MER ``CATALOG-PSF`` style): an image HDU holding square PSF
  stamps of ``STMPSIZE`` pixels side by side, and a binary table giving, per stamp, its
  sky position (``RA``/``DEC``, any case; ``RIGHT_ASCENSION``/``DECLINATION`` too) and
  its centre in the grid image (``x_center``/``y_center``, 0-based pixel coordinates as
  astropy's ``Cutout2D`` takes them; 1-based centres are recognised when only they line
  up with the stamp layout). Columns ``x``/``y`` (the position on the tile) are copied
  into the answer's header when present.
- a **single PSF image**: the whole image HDU is the PSF, for every target of its tile.

The PSF at a target is the grid stamp nearest on the sky (default; its pixels copied
exactly), or, interpolated: the three grid stamps at the corners of the Delaunay triangle
(in the gnomonic plane around the grid's centre) that holds the target, weighted by the
target's barycentric coordinates in it (linear interpolation: exact at the grid points,
continuous across triangle edges). A target outside the triangulated grid gets the
nearest stamp, and says so. Normalisation follows the file's ``PSFNORM`` keyword (``SUM``:
unit sum; ``PEAK``: unit peak; ``NONE``); without one it is measured (all stamps summing to
1 within 1e-3: ``SUM``; peaking at 1: ``PEAK``). An interpolated PSF is renormalised the
same way; under ``NONE`` it is the weighted sum as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from vo_service.engine import sphere
from vo_service.engine.catalog_rows import column_named, position_columns

NEAREST = "nearest"
INTERPOLATED = "interpolated"
METHODS = (NEAREST, INTERPOLATED)
SIZE_KEYWORDS = ("STMPSIZE", "PSFSIZE", "STAMPSIZ")
NORM_KEYWORDS = ("PSFNORM",)
CENTRE_NAMES = (("x_center", "y_center"), ("x_centre", "y_centre"), ("xcenter", "ycenter"))
TILE_NAMES = (("x", "y"),)


class PsfError(ValueError):
    """A PSF file that cannot answer; the message says what is wrong with it."""


@dataclass(frozen=True)
class PsfLayout:
    """Where a PSF file keeps its stamps: image HDU, table HDU (None: a single PSF image),
    stamp side, and the grid's sky positions and stamp centres."""

    image_hdu: int
    table_hdu: int | None
    stamp_size: tuple[int, int]  # (ny, nx)
    ra: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    dec: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    starts: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    tile_xy: NDArray[np.float64] | None = None  # (n, 2) position on the tile, if given
    normalisation: str = "NONE"
    normalisation_source: str = "measured"
    image_shape: tuple[int, int] = (0, 0)

    @property
    def is_grid(self) -> bool:
        """Whether the file is a grid of PSFs (else a single PSF image)."""
        return self.table_hdu is not None


def _keyword(headers: Sequence[fits.Header], keys: Sequence[str]) -> object:
    for header in headers:
        for key in keys:
            if key in header and str(header[key]).strip() != "":
                return header[key]
    return None


def read_layout(hdul: fits.HDUList) -> PsfLayout:
    """The layout of an open PSF file; PsfError says what is missing."""
    image_hdu = next((i for i, hdu in enumerate(hdul) if hdu.is_image and hdu.shape
                      and len(hdu.shape) == 2 and 0 not in hdu.shape), None)
    if image_hdu is None:
        raise PsfError("no 2-D image HDU holding PSF stamps")
    table_hdu = None
    for index, hdu in enumerate(hdul):
        if isinstance(hdu, fits.BinTableHDU | fits.TableHDU) and position_columns(
                hdu.columns.names) and _centre_columns(hdu.columns.names):
            table_hdu = index
            break
    image = hdul[image_hdu]
    headers = [image.header, hdul[0].header] + ([hdul[table_hdu].header] if table_hdu else [])
    shape = tuple(int(n) for n in image.shape)
    if table_hdu is None:
        stamps = np.asarray(image.data, dtype=np.float64)[None]
        norm, source = _normalisation(headers, stamps)
        return PsfLayout(image_hdu, None, shape, normalisation=norm, normalisation_source=source,
                         image_shape=shape)
    size = _keyword(headers, SIZE_KEYWORDS)
    try:
        side = int(size)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise PsfError("a PSF grid needs the stamp side in STMPSIZE (pixels)") from exc
    if side < 1 or side > min(shape):
        raise PsfError(f"STMPSIZE {side} does not fit the {shape[1]}x{shape[0]} grid image")
    table = hdul[table_hdu].data
    names = hdul[table_hdu].columns.names
    ra_name, dec_name = position_columns(names)  # type: ignore[misc]
    x_name, y_name = _centre_columns(names)  # type: ignore[misc]
    ra = np.asarray(table[ra_name], dtype=np.float64)
    dec = np.asarray(table[dec_name], dtype=np.float64)
    centres = np.stack([np.asarray(table[x_name], dtype=np.float64),
                        np.asarray(table[y_name], dtype=np.float64)], axis=1)
    good = np.isfinite(ra) & np.isfinite(dec) & np.all(np.isfinite(centres), axis=1)
    if not good.any():
        raise PsfError("the PSF table has no row with a finite position and centre")
    starts = _stamp_starts(centres, side)
    inside = ((starts >= 0) & (starts + side <= np.array(shape[::-1]))).all(axis=1)
    if not (good & inside).all():
        bad = int(np.flatnonzero(~(good & inside))[0])
        raise PsfError(f"PSF table row {bad + 1}: the stamp centred at {centres[bad]} is not "
                       "inside the grid image (or its position is not finite)")
    tile_names = next((pair for pair in TILE_NAMES if all(column_named(names, [n]) for n in pair)),
                      None)
    tile_xy = None
    if tile_names:
        tile_xy = np.stack([np.asarray(table[column_named(names, [n])], dtype=np.float64)
                            for n in tile_names], axis=1)
    data = image.data
    sample = np.stack([data[y:y + side, x:x + side] for x, y in starts[:64]]).astype(np.float64)
    norm, source = _normalisation(headers, sample)
    return PsfLayout(image_hdu, table_hdu, (side, side), np.mod(ra, 360.0), dec,
                     starts[:, ::-1].copy(), tile_xy, norm, source, shape)


def _centre_columns(names: Sequence[str]) -> tuple[str, str] | None:
    for x_name, y_name in CENTRE_NAMES:
        x, y = column_named(names, [x_name]), column_named(names, [y_name])
        if x and y:
            return x, y
    return None


def _stamp_starts(centres: NDArray[np.float64], side: int) -> NDArray[np.int64]:
    """(x0, y0) 0-based first pixel of each stamp. Centres are 0-based unless only the
    1-based reading makes every stamp start on a multiple of the stamp side."""
    half = (side - 1) / 2.0
    zero_based = np.rint(centres - half).astype(np.int64)
    one_based = np.rint(centres - 1.0 - half).astype(np.int64)
    if np.all(one_based % side == 0) and not np.all(zero_based % side == 0):
        return one_based
    return zero_based


def _normalisation(headers: Sequence[fits.Header], stamps: NDArray[np.float64]
                   ) -> tuple[str, str]:
    """(SUM | PEAK | NONE, where it comes from): the PSFNORM keyword, else measured."""
    said = _keyword(headers, NORM_KEYWORDS)
    if said is not None:
        text = str(said).strip().upper()
        if text in ("SUM", "PEAK", "NONE"):
            return text, "PSFNORM keyword of the file"
    sums = stamps.sum(axis=(-2, -1))
    peaks = stamps.max(axis=(-2, -1))
    if np.allclose(sums, 1.0, atol=1e-3):
        return "SUM", "measured: every stamp sums to 1"
    if np.allclose(peaks, 1.0, atol=1e-3):
        return "PEAK", "measured: every stamp peaks at 1"
    return "NONE", "measured: stamps are neither unit-sum nor unit-peak"


@dataclass(frozen=True)
class PsfAnswer:
    """The PSF at one target: pixels and how they were chosen."""

    pixels: NDArray[np.floating]
    method: str  # nearest | interpolated | single image
    target: tuple[float, float]
    rows: tuple[int, ...] = ()  # 0-based rows of the PSF table used (nearest first)
    weights: tuple[float, ...] = ()
    distances_arcsec: tuple[float, ...] = ()
    grid_positions: tuple[tuple[float, float], ...] = ()
    box: tuple[tuple[int, int], tuple[int, int]] | None = None  # (y, x) ranges, nearest only
    note: str = ""

    @property
    def distance_arcsec(self) -> float | None:
        """Distance from the target to the (nearest) grid PSF used."""
        return self.distances_arcsec[0] if self.distances_arcsec else None


class PsfModel:
    """An open PSF file answering "the PSF at (ra, dec)" for many targets."""

    def __init__(self, path: str | Path, hdul: fits.HDUList | None = None) -> None:
        self.path = Path(path)
        self._own = hdul is None
        self.hdul = hdul if hdul is not None else fits.open(self.path, memmap=True)
        try:
            self.layout = read_layout(self.hdul)
        except Exception:
            self.close()
            raise
        self.image = self.hdul[self.layout.image_hdu]
        self.header = self.image.header
        self._tree = None
        self._triangles = None
        if self.layout.is_grid:
            from scipy.spatial import cKDTree

            self._xyz = sphere.radec_to_xyz(self.layout.ra, self.layout.dec)
            self._tree = cKDTree(self._xyz)

    def close(self) -> None:
        """Close the file (when this model opened it)."""
        if self._own:
            self.hdul.close()

    def __enter__(self) -> PsfModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stamp(self, row: int) -> NDArray[np.floating]:
        """The pixels of grid stamp ``row`` (0-based), exactly as stored."""
        y0, x0 = self.layout.starts[row]
        ny, nx = self.layout.stamp_size
        return np.array(self.image.data[y0:y0 + ny, x0:x0 + nx])

    def nearest(self, ra: ArrayLikeF, dec: ArrayLikeF) -> tuple[NDArray[np.int64],
                                                                 NDArray[np.float64]]:
        """Row of the nearest grid PSF of each target and its distance (arcsec)."""
        assert self._tree is not None
        points = sphere.radec_to_xyz(np.atleast_1d(ra), np.atleast_1d(dec))
        chord, rows = self._tree.query(points)
        distance = np.degrees(2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))) * 3600.0
        return np.asarray(rows, dtype=np.int64), distance

    def at(self, ra: float, dec: float, method: str = NEAREST) -> PsfAnswer:
        """The PSF at one target by ``method`` (``nearest`` or ``interpolated``)."""
        return self.at_many([ra], [dec], method)[0]

    def at_many(self, ra: ArrayLikeF, dec: ArrayLikeF, method: str = NEAREST
                ) -> list[PsfAnswer]:
        """The PSF at each target (one vectorised neighbour search for all)."""
        if method not in METHODS:
            raise ValueError(f"PSF method must be one of {', '.join(METHODS)}, not {method!r}")
        ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
        if not self.layout.is_grid:
            pixels = np.array(self.image.data)
            return [PsfAnswer(pixels, "single image", (float(r), float(d)),
                              note="the file holds one PSF for its whole tile")
                    for r, d in zip(ra, dec, strict=True)]
        rows, distances = self.nearest(ra, dec)
        answers = []
        simplices = self._simplices(ra, dec) if method == INTERPOLATED else None
        for k in range(len(ra)):
            target = (float(ra[k]), float(dec[k]))
            if simplices is not None and simplices[k] is not None:
                answers.append(self._interpolated(target, *simplices[k]))
            else:
                note = ("outside the triangulated PSF grid: the nearest grid PSF"
                        if simplices is not None else "")
                answers.append(self._nearest_answer(target, int(rows[k]), float(distances[k]),
                                                    note))
        return answers

    def _nearest_answer(self, target: tuple[float, float], row: int, distance: float,
                        note: str = "") -> PsfAnswer:
        y0, x0 = (int(v) for v in self.layout.starts[row])
        ny, nx = self.layout.stamp_size
        position = (float(self.layout.ra[row]), float(self.layout.dec[row]))
        return PsfAnswer(self.stamp(row), NEAREST, target, (row,), (1.0,), (distance,),
                         (position,), ((y0, y0 + ny), (x0, x0 + nx)), note)

    def _interpolated(self, target: tuple[float, float], rows: NDArray[np.int64],
                      weights: NDArray[np.float64]) -> PsfAnswer:
        order = np.argsort(-weights)
        rows, weights = rows[order], weights[order]
        stamps = np.stack([self.stamp(int(r)).astype(np.float64) for r in rows])
        pixels = np.tensordot(weights, stamps, axes=1)
        if self.layout.normalisation == "SUM":
            pixels = pixels / pixels.sum()
        elif self.layout.normalisation == "PEAK":
            pixels = pixels / pixels.max()
        distances = sphere.angular_distance(target[0], target[1], self.layout.ra[rows],
                                            self.layout.dec[rows]) * 3600.0
        positions = tuple((float(self.layout.ra[r]), float(self.layout.dec[r])) for r in rows)
        near = np.argsort(distances)
        return PsfAnswer(pixels.astype(np.float32 if self.image.data.dtype.itemsize <= 4
                                       else np.float64), INTERPOLATED, target,
                         tuple(int(rows[i]) for i in near),
                         tuple(float(weights[i]) for i in near),
                         tuple(float(distances[i]) for i in near),
                         tuple(positions[i] for i in near))

    def _simplices(self, ra: NDArray[np.float64], dec: NDArray[np.float64]
                   ) -> list[tuple[NDArray[np.int64], NDArray[np.float64]] | None]:
        """Per target: the grid rows at the corners of its Delaunay triangle and their
        barycentric weights, or None outside the triangulation (or with < 3 grid PSFs)."""
        if len(self.layout.ra) < 3:
            return [None] * len(ra)
        if self._triangles is None:
            from scipy.spatial import Delaunay, QhullError

            centre = sphere.normalise(self._xyz.mean(axis=0))
            east, north = sphere.tangent_basis(centre[None, :])
            plane = self._plane(self._xyz, centre, east[0], north[0])
            try:
                self._triangles = (Delaunay(plane), centre, east[0], north[0])
            except QhullError:  # every grid PSF on one line
                return [None] * len(ra)
        triangles, centre, east, north = self._triangles
        points = self._plane(sphere.radec_to_xyz(ra, dec), centre, east, north)
        found = triangles.find_simplex(points)
        out: list[tuple[NDArray[np.int64], NDArray[np.float64]] | None] = []
        for k, simplex in enumerate(found):
            if simplex < 0:
                out.append(None)
                continue
            transform = triangles.transform[simplex]
            partial = transform[:2] @ (points[k] - transform[2])
            weights = np.append(partial, 1.0 - partial.sum())
            weights = np.clip(weights, 0.0, 1.0)
            out.append((triangles.simplices[simplex].astype(np.int64), weights / weights.sum()))
        return out

    @staticmethod
    def _plane(xyz: NDArray[np.float64], centre: NDArray[np.float64],
               east: NDArray[np.float64], north: NDArray[np.float64]) -> NDArray[np.float64]:
        scale = xyz @ centre
        return np.stack([(xyz @ east) / scale, (xyz @ north) / scale], axis=1)


ArrayLikeF = Sequence[float] | NDArray[np.float64]
