"""Coverage MOCs (IVOA MOC 2.0) of indexed footprints, built with mocpy.

A MOC is a set of HEALPix cells (NESTED, ICRS) that contains every footprint: an upper
approximation, exact to one cell at its order. The order is chosen from the pixel scales of
the images it describes (:func:`coverage_order`): the shallowest order whose cells are at
most :data:`CELL_PIXELS` (16) median pixels wide. A position the MOC marks as covered is
then at most 16 pixels from an image, so a stamp of the default 64 pixels around it still
overlaps that image; a deeper order would only make the MOC larger (it grows with 2^order
along the footprint edges) without telling a client more. The order is made coarser while
the footprints' edges would cross more than :data:`MAX_EDGE_CELLS` cells at it: mocpy
spends about 2 µs per edge cell, so a build stays within seconds for any archive (10,000
half-degree tiles: order 12, 51" cells, instead of minutes at order 16).

The archive's MOCs are kept per index generation and selection (:class:`CoverageCache`):
re-indexing bumps ``ArchiveIndex.generation()`` and the next request builds anew.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import astropy.units as u
import numpy as np
from mocpy import MOC

from vo_service.archive.records import ImageRecord, Vertices
from vo_service.engine import sphere

CELL_PIXELS = 16  # a MOC cell is at most this many pixels of the selected images wide
MIN_ORDER = 6  # 0.92 deg cells: coarser says nothing about an image archive
MAX_ORDER = 18  # 0.8 arcsec cells: deeper only grows the file (sub-0.05"/pixel images)
DEFAULT_ORDER = 16  # 3.2 arcsec cells, when no pixel scale is known
MAX_EDGE_CELLS = 4_000_000  # cells along all footprint edges that one build may cost
# HEALPix cell side at order 0 in arcsec: sqrt(4 pi / 12) rad; it halves with each order.
ORDER0_CELL_ARCSEC = math.degrees(math.sqrt(math.pi / 3)) * 3600
FILTERS = ("collection", "instrument", "band", "product_type")
CACHED_SELECTIONS = 16
POLYGONS_PER_CALL = 1000  # polygons per mocpy call (see polygons_moc)


def cell_arcsec(order: int) -> float:
    """Side of a HEALPix cell at ``order`` in arcsec (square root of its area)."""
    return ORDER0_CELL_ARCSEC / 2**order


def coverage_order(pixel_scales_arcsec: Iterable[float | None],
                   perimeter_arcsec: float = 0.0) -> int:
    """The shallowest order whose cells are at most CELL_PIXELS median pixels wide
    (DEFAULT_ORDER when no scale is known), coarser while ``perimeter_arcsec`` (the summed
    edge length of the footprints) would cross more than MAX_EDGE_CELLS cells; always
    within [MIN_ORDER, MAX_ORDER]."""
    scales = [s for s in pixel_scales_arcsec if s is not None and math.isfinite(s) and s > 0]
    order = DEFAULT_ORDER
    if scales:
        widest_cell = CELL_PIXELS * float(np.median(scales))
        order = math.ceil(math.log2(ORDER0_CELL_ARCSEC / widest_cell))
    if perimeter_arcsec > 0:  # edge cells at order k: perimeter / cell_arcsec(k)
        affordable = math.floor(math.log2(MAX_EDGE_CELLS * ORDER0_CELL_ARCSEC
                                          / perimeter_arcsec))
        order = min(order, affordable)
    return min(MAX_ORDER, max(MIN_ORDER, order))


def perimeter_arcsec(polygons: Iterable[Vertices | np.ndarray]) -> float:
    """Summed great-circle edge length of ``polygons`` (ICRS degrees), in arcsec; polygons
    of one vertex count at once (a catalog job has tens of thousands of stamp boxes)."""
    grouped: dict[int, list[np.ndarray]] = defaultdict(list)
    for polygon in polygons:
        vertices = np.asarray(polygon, dtype=float)
        if len(vertices) >= 2:
            grouped[len(vertices)].append(vertices)
    total = 0.0
    for same in grouped.values():
        stacked = np.stack(same)  # (polygons, vertices, 2)
        xyz = sphere.radec_to_xyz(stacked[..., 0], stacked[..., 1])  # (polygons, vertices, 3)
        total += float(sphere.angle_deg(xyz, np.roll(xyz, -1, axis=1)).sum())
    return total * 3600.0


def distinct_polygons(polygons: Iterable[Vertices]) -> list[Vertices]:
    """``polygons`` without repeats (sibling products of a tile share one footprint)."""
    found: dict[tuple, Vertices] = {}
    for polygon in polygons:
        found.setdefault(tuple((round(ra, 7), round(dec, 7)) for ra, dec in polygon), polygon)
    return list(found.values())


def pixel_scale_arcsec(record: ImageRecord) -> float | None:
    """Approximate pixel side of an image in arcsec (footprint diagonal / pixel diagonal)."""
    if record.s_fov and record.s_xel1 and record.s_xel2:
        return float(record.s_fov) * 3600.0 / math.hypot(record.s_xel1, record.s_xel2)
    return float(record.s_resolution) if record.s_resolution else None


def polygons_moc(polygons: Sequence[Vertices | np.ndarray], order: int,
                 n_threads: int | None = None) -> MOC:
    """The union of spherical polygons (ICRS degrees, great-circle edges) at ``order``.

    mocpy builds polygons with the same vertex count in one vectorized call, so they are
    grouped by it, at most POLYGONS_PER_CALL per call: one call's time grows with the square
    of its polygons (mocpy 0.21: 5,000 in 0.6 s, 42,000 in 25 s; in calls of 1,000, 2 s).
    ``n_threads``: mocpy's threads (None: one per core; 1 where processes already share
    the cores).
    """
    grouped: dict[int, list[np.ndarray]] = defaultdict(list)
    for polygon in polygons:
        vertices = np.asarray(polygon, dtype=float)
        if len(vertices) >= 3:
            grouped[len(vertices)] += [vertices[:, 0] % 360.0, vertices[:, 1]]
    step = 2 * POLYGONS_PER_CALL  # two arrays (lon, lat) per polygon
    mocs = [moc for lonlat in grouped.values() for start in range(0, len(lonlat), step)
            for moc in MOC.from_polygons(lonlat[start:start + step], max_depth=order,
                                          n_threads=n_threads)]
    return union(mocs, order)


def cones_moc(ra: Sequence[float], dec: Sequence[float], radius_deg: Sequence[float],
              order: int) -> MOC:
    """The union of cones (ICRS degrees) at ``order``: images too wide for a polygon."""
    if not len(ra):
        return MOC.new_empty(order)
    radius = np.minimum(np.asarray(radius_deg, dtype=float), 180.0)
    return MOC.from_cones(lon=np.asarray(ra, dtype=float) * u.deg,
                          lat=np.asarray(dec, dtype=float) * u.deg, radius=radius * u.deg,
                          max_depth=order, union_strategy="large_cones")


def points_moc(ra: Sequence[float], dec: Sequence[float], order: int) -> MOC:
    """The cells at ``order`` holding each position (ICRS degrees); NaNs are skipped."""
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        return MOC.new_empty(order)
    return MOC.from_lonlat(lon=(ra[good] % 360.0) * u.deg, lat=dec[good] * u.deg,
                           max_norder=order)


def union(mocs: Sequence[MOC], order: int) -> MOC:
    """The union of ``mocs`` (an empty MOC at ``order`` when there are none)."""
    if not mocs:
        return MOC.new_empty(order)
    return mocs[0].union(*mocs[1:]) if len(mocs) > 1 else mocs[0]


def records_moc(records: Sequence[ImageRecord], order: int | None = None) -> MOC:
    """The coverage of image records: polygons from ``s_region``; wide images (no polygon)
    as the cone of their field of view around their centre (whole sky when unknown)."""
    polygons = distinct_polygons(r.s_region for r in records if r.s_region)
    if order is None:
        order = coverage_order((pixel_scale_arcsec(r) for r in records),
                               perimeter_arcsec(polygons))
    wide = [r for r in records if not r.s_region and r.s_ra is not None and r.s_dec is not None]
    parts = [polygons_moc(polygons, order)]
    if wide:
        parts.append(cones_moc([r.s_ra for r in wide], [r.s_dec for r in wide],
                               [r.s_fov / 2 if r.s_fov else 180.0 for r in wide], order))
    return union(parts, order)


# --- serialisations (MOC 2.0 §4) -------------------------------------------------------


def moc_fits_bytes(moc: MOC, *, moc_id: str | None = None, moc_type: str = "IMAGE") -> bytes:
    """The MOC as a MOC 2.0 FITS file (NUNIQ ordering, which MOC 1.x readers also read)."""
    keywords = {"MOCTYPE": moc_type, "EXTNAME": "MOC", "ORIGIN": "vo-service",
                "DATE": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")}
    if moc_id:
        keywords["MOCID"] = moc_id
    hdus = moc.serialize(format="fits", v1_compatible=True, optional_kw_dict=keywords)
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


def moc_json(moc: MOC) -> dict[str, list[int]]:
    """The MOC in the JSON serialisation MOC 2.0 suggests: ``{"order": [cells]}``; the
    best order appears (possibly with no cells) so a reader knows the resolution."""
    cells = {str(order): [int(c) for c in values]
             for order, values in moc.serialize(format="json").items()}
    cells.setdefault(str(moc.max_order), [])
    return cells


def moc_ascii(moc: MOC) -> str:
    """The MOC in the ASCII serialisation (``6/1-3 7/`` ...), best order included."""
    text = moc.serialize(format="str").strip()
    last = text.split()[-1].split("/")[0] if text else ""
    if last != str(moc.max_order):
        text = f"{text} {moc.max_order}/".strip()
    return text


# --- the archive's coverage, per selection and index generation ------------------------


@dataclass(frozen=True)
class Selection:
    """Which images a coverage describes: each filter a set of accepted values (empty:
    any)."""

    collection: tuple[str, ...] = ()
    instrument: tuple[str, ...] = ()
    band: tuple[str, ...] = ()
    product_type: tuple[str, ...] = ()

    @classmethod
    def of(cls, **values: Iterable[str] | None) -> Selection:
        """A selection from lists of values (duplicates dropped, order kept sorted)."""
        return cls(**{name: tuple(sorted(set(values.get(name) or ()))) for name in FILTERS})

    def filters(self) -> dict[str, list[str]]:
        """Keyword filters for ``ArchiveIndex.records``."""
        return {name: list(getattr(self, name)) for name in FILTERS if getattr(self, name)}

    def key(self) -> str:
        """A short stable name of the selection (file names, ETags)."""
        text = json.dumps([getattr(self, name) for name in FILTERS])
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Coverage:
    """One built coverage: the MOC, how many images it describes, the index generation."""

    moc: MOC
    images: int
    generation: int
    order: int


class CoverageCache:
    """Coverage MOCs of the archive per selection, rebuilt when the index changes.

    Kept in memory (a few selections) and as FITS files under ``folder`` (so that other
    server processes and restarts reuse them); files of older generations are removed when
    a newer one is written. Builds of the same selection wait for each other.
    """

    def __init__(self, index, folder: Path | None = None) -> None:  # noqa: ANN001
        self.index = index
        self.folder = folder
        self._memory: OrderedDict[tuple[int, str], Coverage] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = defaultdict(threading.Lock)

    def get(self, selection: Selection) -> Coverage:
        """The coverage of ``selection`` for the index as it is now."""
        key = selection.key()
        with self._building[key]:
            generation = self.index.generation()
            with self._lock:
                found = self._memory.get((generation, key))
            if found is None:
                found = self._from_disk(generation, key) or self._build(selection, generation)
                with self._lock:
                    self._memory[(generation, key)] = found
                    while len(self._memory) > CACHED_SELECTIONS:
                        self._memory.popitem(last=False)
            return found

    def _build(self, selection: Selection, generation: int) -> Coverage:
        records = self.index.records(**selection.filters())
        moc = records_moc(records)
        coverage = Coverage(moc, len(records), generation, int(moc.max_order))
        self._to_disk(coverage, selection.key())
        return coverage

    def _path(self, generation: int, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}-g{generation}.fits"

    def _from_disk(self, generation: int, key: str) -> Coverage | None:
        path = self._path(generation, key)
        if path is None or not path.is_file():
            return None
        try:
            moc = MOC.load(str(path), format="fits")
            images = int(path.with_suffix(".count").read_text())
        except (OSError, ValueError):  # damaged or half-removed: build again
            return None
        return Coverage(moc, images, generation, int(moc.max_order))

    def _to_disk(self, coverage: Coverage, key: str) -> None:
        path = self._path(coverage.generation, key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in path.parent.glob(f"{key}-g*"):
                stale.unlink(missing_ok=True)
            _write_atomic(path.with_suffix(".count"), str(coverage.images).encode())
            _write_atomic(path, moc_fits_bytes(coverage.moc))
        except OSError:  # a full or read-only disk: serve from memory only
            return


def _write_atomic(path: Path, content: bytes) -> None:
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(content)
    os.replace(temporary, path)

