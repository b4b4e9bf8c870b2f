"""Does a footprint meet a search region? SIA POS shapes (Circle, Range, Polygon) on the sphere.

Each shape is turned into a small set of spherical polygons or a cone; a bounding-cone test
prunes footprints cheaply before the exact test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vo_service.engine import sphere
from vo_service.shapes import Circle, Polygon, Range

RANGE_PIECE_RA = 90.0    # a Range is cut into pieces no wider than this (deg of RA) ...
RANGE_PIECE_DEC = 60.0   # ... and no taller than this, so each piece is a small polygon
RANGE_EDGE_STEP = 0.5    # constant-Dec edges sampled this often (deg of RA)


@dataclass(frozen=True)
class Probe:
    """A search region prepared for footprint tests.

    ``polygons`` (unit-vector arrays) or ``circle`` (centre, radius deg) or ``dec_band``
    (whole RA circle between two Decs); ``cones`` bound the shape for pruning.
    """

    polygons: tuple[NDArray[np.float64], ...] = ()
    circle: tuple[NDArray[np.float64], float] | None = None
    dec_band: tuple[float, float] | None = None
    cones: tuple[tuple[NDArray[np.float64], float], ...] = ()

    def sample_points(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """ICRS (ra, dec) points on and inside the region, for WCS tests of wide images."""
        if self.circle is not None:
            centre, radius = self.circle
            ra, dec = sphere.xyz_to_radec(centre)
            east, north = sphere.tangent_basis(centre)
            angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
            r = np.radians(radius)
            ring = (np.cos(r) * centre + np.sin(r) * (np.cos(angles)[:, None] * east
                                                      + np.sin(angles)[:, None] * north))
            ring_ra, ring_dec = sphere.xyz_to_radec(ring)
            return np.append(ring_ra, ra), np.append(ring_dec, dec)
        if self.dec_band is not None:
            lo, hi = self.dec_band
            grid_ra, grid_dec = np.meshgrid(np.arange(0, 360, 10.0), np.linspace(lo, hi, 5))
            return grid_ra.ravel(), grid_dec.ravel()
        xyz = np.concatenate([*self.polygons, *(c[None, :] for c, _ in self.cones)])
        return sphere.xyz_to_radec(xyz)


def probe_of(shape: Circle | Range | Polygon) -> Probe:
    """Prepare a SIA POS shape; raises TypeError for anything else."""
    if isinstance(shape, Circle):
        centre = sphere.radec_to_xyz(shape.ra, shape.dec)
        return Probe(circle=(centre, shape.radius), cones=((centre, shape.radius),))
    if isinstance(shape, Polygon):
        xyz = sphere.radec_to_xyz([v[0] for v in shape.vertices], [v[1] for v in shape.vertices])
        return Probe(polygons=(xyz,), cones=(sphere.bounding_cone(xyz),))
    if isinstance(shape, Range):
        return _range_probe(shape)
    raise TypeError(f"unsupported search region {type(shape).__name__}")


def _range_probe(shape: Range) -> Probe:
    ra_lo, span, dec_lo, dec_hi, all_ra = sphere.range_limits(shape)
    if all_ra:
        return Probe(dec_band=(dec_lo, dec_hi))
    span = max(span, 1e-9)
    ra_cuts = np.linspace(0.0, span, int(math.ceil(span / RANGE_PIECE_RA)) + 1) + ra_lo
    height = max(dec_hi - dec_lo, 1e-9)
    dec_cuts = np.linspace(dec_lo, dec_lo + height, int(math.ceil(height / RANGE_PIECE_DEC)) + 1)
    polygons = []
    for ra_a, ra_b in zip(ra_cuts[:-1], ra_cuts[1:], strict=True):
        for dec_a, dec_b in zip(dec_cuts[:-1], dec_cuts[1:], strict=True):
            steps = max(2, int(math.ceil((ra_b - ra_a) / RANGE_EDGE_STEP)) + 1)
            along = np.linspace(ra_a, ra_b, steps)
            bottom = sphere.radec_to_xyz(along, np.full(steps, dec_a))
            top = sphere.radec_to_xyz(along[::-1], np.full(steps, min(dec_b, 90.0)))
            if dec_a <= -90.0:
                bottom = bottom[:1]
            if dec_b >= 90.0:
                top = top[:1]
            polygons.append(np.concatenate([bottom, top]))
    cones = tuple(sphere.bounding_cone(p) for p in polygons)
    return Probe(polygons=tuple(polygons), cones=cones)


def footprint_meets(probe: Probe, vertices: NDArray[np.float64]) -> bool:
    """Whether a footprint polygon (unit vectors) overlaps or touches the probe's RA range
    or polygon (a circle meets every footprint at once: see
    :meth:`vo_service.archive.lookup.SpatialIndex.meeting`)."""
    if probe.circle is not None:
        raise ValueError("a circle is met by SpatialIndex.meeting, all footprints at once")
    if probe.dec_band is not None:
        lo, hi = probe.dec_band
        _, decs = sphere.xyz_to_radec(vertices)
        top, bottom = float(decs.max()), float(decs.min())
        pole = sphere.radec_to_xyz([0.0, 0.0], [90.0, -90.0])
        north, south = sphere.points_in_polygon(pole, vertices)
        top = 90.0 if north else top
        bottom = -90.0 if south else bottom
        return bottom <= hi and top >= lo
    return any(sphere.polygons_intersect(vertices, polygon) for polygon in probe.polygons)


def cones_may_meet(probe: Probe, centres: NDArray[np.float64],
                   radii: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Cheap pre-test per footprint cone: could it touch the region at all?"""
    if probe.dec_band is not None:
        _, dec = sphere.xyz_to_radec(centres)
        lo, hi = probe.dec_band
        return (dec - radii <= hi) & (dec + radii >= lo)
    result = np.zeros(len(centres), dtype=bool)
    for centre, radius in probe.cones:
        result |= sphere.angle_deg(centres, centre) <= radii + radius + 1e-7
    return result
