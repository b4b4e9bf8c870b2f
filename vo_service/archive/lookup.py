"""Vectorized position -> image lookup over many footprints.

A grid of cells over the sky (Dec rows, RA columns about as wide as they are tall) lists the
images whose bounding cone touches each cell. A batch of positions is binned into cells, the
candidate (position, image) pairs are checked against the bounding cones with dot products,
and only the survivors get the exact point-in-polygon test (gnomonic crossing number, all in
numpy). Wide images (no polygon) are checked with their own WCS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vo_service.archive import regions
from vo_service.archive.footprint import load_celestial_image
from vo_service.archive.records import ImageRecord
from vo_service.engine import sphere

log = logging.getLogger(__name__)

IntArray = NDArray[np.int64]
PAIR_BLOCK = 50_000  # candidate pairs tested at once (bounds memory: block x vertices)


class SpatialIndex:
    """Footprints of a list of records, ready for batch containment queries."""

    def __init__(self, records: Sequence[ImageRecord],
                 footprints: Sequence[Sequence[Sequence[float]] | None] | None = None) -> None:
        """``footprints`` (s_region per record, None when wide) spares reading every record
        when ``records`` is a lazy sequence."""
        self.records = records
        if footprints is None:
            footprints = [None if r.wide else r.s_region for r in records]
        wide = np.array([f is None for f in footprints], dtype=bool)
        self.wide_indices = np.flatnonzero(wide)
        self.polygon_indices = np.flatnonzero(~wide)
        count = len(self.polygon_indices)
        regions = [footprints[i] or () for i in self.polygon_indices]
        most = max((len(region) for region in regions), default=3)
        lengths = np.array([len(region) for region in regions], dtype=np.int64)
        flat = np.array([v for region in regions for v in region], dtype=float).reshape(-1, 2)
        # Pad every polygon to ``most`` vertices by repeating its first vertex: zero-length
        # edges never cross the test ray.
        rank = np.arange(most)[None, :]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        take = starts[:, None] + np.where(rank < lengths[:, None], rank, 0)
        vertices = sphere.radec_to_xyz(flat[take, 0], flat[take, 1]) if count else np.zeros(
            (0, most, 3))
        self.vertices, self.lengths = vertices, lengths
        self.centres = sphere.normalise(vertices.mean(axis=1)) if count else np.zeros((0, 3))
        radii = (sphere.angle_deg(vertices, self.centres[:, None, :]).max(axis=1)
                 if count else np.zeros(0))
        self.radii = radii + 1e-7
        self.cos_radii = np.cos(np.radians(self.radii))
        east, north = sphere.tangent_basis(self.centres)
        self.east, self.north = east, north
        vx, vy, _ = sphere.gnomonic(vertices, self.centres[:, None, :], east[:, None, :],
                                    north[:, None, :])
        self.vx, self.vy = vx, vy
        self._grid = _ConeGrid(self.centres, self.radii)

    def __len__(self) -> int:
        return len(self.records)

    def vertices_of(self, row: int) -> NDArray[np.float64]:
        """Unit vectors of the polygon in row ``row`` (of ``polygon_indices``), unpadded."""
        return self.vertices[row, : self.lengths[row]]

    def meeting(self, probes: Sequence[regions.Probe]) -> NDArray[np.bool_]:
        """Which records' footprints meet (overlap or touch) any of the probed regions."""
        hit = np.zeros(len(self.records), dtype=bool)
        for probe in probes:
            rows = np.flatnonzero(regions.cones_may_meet(probe, self.centres, self.radii)
                                  & ~hit[self.polygon_indices])
            if probe.circle is not None:  # the usual POS: every footprint at once
                met = self._circle_meets(*probe.circle, rows)
            else:
                met = np.array([regions.footprint_meets(probe, self.vertices_of(row))
                                for row in rows], dtype=bool)
            hit[self.polygon_indices[rows[met]]] = True
        if len(self.wide_indices) and probes:  # each wide image's WCS once, for all probes
            samples = [probe.sample_points() for probe in probes]
            ra = np.concatenate([ra for ra, _ in samples])
            dec = np.concatenate([dec for _, dec in samples])
            for index in self.wide_indices:
                if not hit[index]:
                    hit[index] = self._wide_contains(self.records[index], ra, dec).any()
        return hit

    def contains(
        self, ra: ArrayLike, dec: ArrayLike, selected: NDArray[np.bool_] | None = None
    ) -> tuple[IntArray, IntArray]:
        """All (position index, record index) pairs where the record's image holds the position.

        ``selected`` (bool per record) restricts the records considered. Pairs come sorted by
        position, then record.
        """
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        if ra.shape != dec.shape or ra.ndim != 1:
            raise ValueError("ra and dec must be 1-D arrays of equal length")
        if selected is None:
            selected = np.ones(len(self.records), dtype=bool)
        valid = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
        points = sphere.radec_to_xyz(ra[valid], dec[valid])
        found_points: list[IntArray] = []
        found_records: list[IntArray] = []

        poly_selected = selected[self.polygon_indices]
        if len(points) and poly_selected.any():
            point_rows, poly_rows = self._grid.candidates(ra[valid], dec[valid])
            keep = poly_selected[poly_rows]
            point_rows, poly_rows = point_rows[keep], poly_rows[keep]
            for start in range(0, len(point_rows), PAIR_BLOCK):
                p_rows = point_rows[start: start + PAIR_BLOCK]
                g_rows = poly_rows[start: start + PAIR_BLOCK]
                inside = self._inside(points[p_rows], g_rows)
                found_points.append(valid[p_rows[inside]])
                found_records.append(self.polygon_indices[g_rows[inside]])

        for index in self.wide_indices:
            if not selected[index] or not len(points):
                continue
            inside = self._wide_contains(self.records[index], ra[valid], dec[valid])
            found_points.append(valid[inside])
            found_records.append(np.full(int(inside.sum()), index, dtype=np.int64))

        if not found_points:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        point_index = np.concatenate(found_points).astype(np.int64)
        record_index = np.concatenate(found_records).astype(np.int64)
        order = np.lexsort((record_index, point_index))
        return point_index[order], record_index[order]

    def _circle_meets(self, centre: NDArray[np.float64], radius: float, rows: IntArray
                      ) -> NDArray[np.bool_]:
        """Which footprints ``rows`` a circle (unit-vector centre, radius deg) overlaps or
        touches: its centre inside, or an edge within its radius."""
        if not len(rows):
            return np.zeros(0, dtype=bool)
        inside = self._inside(np.broadcast_to(centre, (len(rows), 3)), rows)
        lengths = self.lengths[rows][:, None]
        corner = np.arange(self.vertices.shape[1])[None, :]
        a = self.vertices[rows]  # (rows, most vertices, 3), padded past each length
        b = np.take_along_axis(a, ((corner + 1) % lengths)[..., None], axis=1)
        distances = np.where(corner < lengths, sphere.arc_distances(centre, a, b), np.inf)
        return inside | (distances.min(axis=1) <= radius)

    def _inside(self, points: NDArray[np.float64], rows: IntArray) -> NDArray[np.bool_]:
        """Exact containment of points[i] in polygon rows[i] (after the cone check)."""
        centres = self.centres[rows]
        near = np.sum(points * centres, axis=1) >= self.cos_radii[rows]
        inside = np.zeros(len(rows), dtype=bool)
        if not near.any():
            return inside
        idx = np.flatnonzero(near)
        sub_rows = rows[idx]
        px, py, front = sphere.gnomonic(points[idx], centres[idx], self.east[sub_rows],
                                        self.north[sub_rows])
        hit = sphere.planar_crossings(px, py, self.vx[sub_rows], self.vy[sub_rows])
        inside[idx] = hit & front
        return inside

    @staticmethod
    def _wide_contains(record: ImageRecord, ra: NDArray[np.float64],
                       dec: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Containment in a wide image decided by its WCS (the file is read once, cached)."""
        try:
            image = load_celestial_image(record.path, record.hdu, record.mtime)
        except OSError as exc:
            log.warning("cannot read %s for a lookup: %s", record.path, exc)
            image = None
        if image is None:
            return np.zeros(len(ra), dtype=bool)
        return image.contains(ra, dec)


class _ConeGrid:
    """Sky cells (Dec rows x RA columns) listing the cones that touch them (CSR arrays)."""

    def __init__(self, centres: NDArray[np.float64], radii: NDArray[np.float64]) -> None:
        c_ra, c_dec = sphere.xyz_to_radec(centres) if len(centres) else (np.zeros(0),) * 2
        typical = float(np.median(radii)) if len(radii) else 1.0
        self.height = float(np.clip(2.0 * typical, 0.02, 10.0))
        self.rows = int(np.ceil(180.0 / self.height))
        lower = -90.0 + self.height * np.arange(self.rows)
        upper = np.minimum(lower + self.height, 90.0)
        widest = np.where((lower <= 0) & (upper >= 0), 0.0,
                          np.minimum(np.abs(lower), np.abs(upper)))
        self.columns = np.maximum(
            1, np.floor(360.0 * np.cos(np.radians(widest)) / self.height)
        ).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.columns)])
        # Cones much larger than a cell are checked against every position instead.
        big = radii > 20.0 * self.height
        self.big = np.flatnonzero(big)
        small = np.flatnonzero(~big)
        cells, owners = self._cells_of(c_ra[small], c_dec[small], radii[small])
        owners = small[owners]
        order = np.argsort(cells, kind="stable")
        self.members = owners[order]
        self.indptr = np.searchsorted(cells[order], np.arange(self.offsets[-1] + 1))

    def _row_of(self, dec: NDArray[np.float64]) -> IntArray:
        return np.clip(np.floor((dec + 90.0) / self.height), 0, self.rows - 1).astype(np.int64)

    def _cells_of(self, ra: NDArray[np.float64], dec: NDArray[np.float64],
                  radius: NDArray[np.float64]) -> tuple[IntArray, IntArray]:
        """(cell id, cone index) for every cell each cone touches (conservative)."""
        row_lo, row_hi = self._row_of(dec - radius), self._row_of(dec + radius)
        polar = (dec + radius >= 90.0) | (dec - radius <= -90.0)
        ratio = np.sin(np.radians(radius)) / np.maximum(np.cos(np.radians(dec)), 1e-12)
        half_width = np.where(polar | (ratio >= 1.0), 180.0,
                              np.degrees(np.arcsin(np.clip(ratio, 0.0, 1.0))))
        per_cone = row_hi - row_lo + 1
        cone = np.repeat(np.arange(len(ra)), per_cone)
        row = row_lo[cone] + _ranks(per_cone)
        columns = self.columns[row]
        width = 360.0 / columns
        first = np.floor((ra[cone] - half_width[cone]) / width).astype(np.int64)
        last = np.floor((ra[cone] + half_width[cone]) / width).astype(np.int64)
        count = np.minimum(last - first + 1, columns)
        full = half_width[cone] >= 180.0
        first = np.where(full, 0, first)
        count = np.where(full, columns, count)
        pair = np.repeat(np.arange(len(row)), count)
        column = (first[pair] + _ranks(count)) % columns[pair]
        return self.offsets[row[pair]] + column, cone[pair]

    def candidates(self, ra: NDArray[np.float64], dec: NDArray[np.float64],
                   ) -> tuple[IntArray, IntArray]:
        """(position row, cone index) pairs whose cell lists the cone, plus every big cone."""
        row = self._row_of(dec)
        columns = self.columns[row]
        column = np.floor((ra % 360.0) / (360.0 / columns)).astype(np.int64) % columns
        cell = self.offsets[row] + column
        start, stop = self.indptr[cell], self.indptr[cell + 1]
        count = stop - start
        point = np.repeat(np.arange(len(ra)), count)
        member = self.members[np.repeat(start, count) + _ranks(count)]
        if len(self.big):
            point = np.concatenate([point, np.repeat(np.arange(len(ra)), len(self.big))])
            member = np.concatenate([member, np.tile(self.big, len(ra))])
        return point, member


def _ranks(counts: IntArray) -> IntArray:
    """0, 1, ..., c-1 for each count c, concatenated (vectorized ``arange`` per group)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts
