"""Sky-side geometry of the SODA shapes: boundary samples, inside tests, distances.

`boundary_near` samples a region's boundary coarsely everywhere and densely (at a given
angular step) only where it passes near an image, so a boundary crossing a small image
is followed pixel by pixel without sampling the whole sky finely.

Pure numpy on ICRS degrees; the spherical primitives (unit vectors, distances, point in
polygon, RANGE wrap-around) are `sphere`'s. `geometry` projects the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from vo_service.engine.sphere import (
    angular_distance,
    in_range,
    points_in_polygon,
    radec_to_xyz,
    range_limits,
    xyz_to_radec,
)
from vo_service.shapes import Circle, Polygon, Range, Shape

COARSE_SAMPLES = 256  # per boundary piece, before densifying near the image
MAX_DENSE_SAMPLES = 200_000  # per region: the step grows beyond this

Piece = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # t in [0, 1] -> (ra, dec)


def _circle_piece(circle: Circle) -> Piece:
    dec0, ra0 = math.radians(circle.dec), math.radians(circle.ra)
    r = math.radians(circle.radius)

    def point(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pa = 2 * np.pi * t  # position angle: spherical offsets of `radius` from the centre
        sin_dec = math.sin(dec0) * math.cos(r) + math.cos(dec0) * math.sin(r) * np.cos(pa)
        dec = np.arcsin(np.clip(sin_dec, -1.0, 1.0))
        ra = ra0 + np.arctan2(np.sin(pa) * math.sin(r) * math.cos(dec0),
                              math.cos(r) - math.sin(dec0) * sin_dec)
        return np.degrees(ra) % 360.0, np.degrees(dec)
    return point


def _arc_piece(a: tuple[float, float], b: tuple[float, float]) -> Piece:
    """The great-circle arc a -> b (the shorter one), uniform in angle."""
    va = radec_to_xyz(np.array(a[0]), np.array(a[1]))
    vb = radec_to_xyz(np.array(b[0]), np.array(b[1]))
    angle = math.atan2(float(np.linalg.norm(np.cross(va, vb))), float(va @ vb))

    def point(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if angle < 1e-12:
            return np.full(t.shape, a[0] % 360.0), np.full(t.shape, float(a[1]))
        wa = np.sin((1 - t) * angle) / math.sin(angle)
        wb = np.sin(t * angle) / math.sin(angle)
        return xyz_to_radec(wa[:, None] * va + wb[:, None] * vb)
    return point


def _range_pieces(box: Range) -> list[Piece]:
    ra_lo, span, dec_lo, dec_hi, all_ra = range_limits(box)

    def parallel(dec: float) -> Piece:
        return lambda t: ((ra_lo + span * t) % 360.0, np.full(t.shape, dec))

    def meridian(ra: float) -> Piece:
        return lambda t: (np.full(t.shape, ra % 360.0), dec_lo + (dec_hi - dec_lo) * t)

    pieces = [parallel(dec_lo), parallel(dec_hi)]
    if not all_ra:
        pieces += [meridian(ra_lo), meridian(ra_lo + span)]
    return pieces


def boundary_pieces(region: Shape) -> list[Piece]:
    """The boundary of a Circle, Polygon or Range as parametrized curves."""
    if isinstance(region, Circle):
        return [_circle_piece(region)]
    if isinstance(region, Polygon):
        vertices = region.vertices
        return [_arc_piece(vertices[i], vertices[(i + 1) % len(vertices)])
                for i in range(len(vertices))]
    if isinstance(region, Range):
        return _range_pieces(region)
    raise TypeError(f"no boundary for {type(region).__name__}")


def boundary_near(region: Shape, centre: tuple[float, float], radius: float,
                  step: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) samples of the region's boundary: COARSE_SAMPLES per piece everywhere,
    refined (at most 64-fold per round) until the stretches passing within `radius`
    degrees of `centre` are sampled every `step` degrees (coarser past
    MAX_DENSE_SAMPLES samples)."""
    parts_ra, parts_dec = [], []
    budget = MAX_DENSE_SAMPLES
    centre_vector = radec_to_xyz(np.array(centre[0]), np.array(centre[1]))
    for piece in boundary_pieces(region):
        t = np.linspace(0.0, 1.0, COARSE_SAMPLES + 1)
        ra, dec = piece(t)
        parts_ra.append(ra)
        parts_dec.append(dec)
        counts = np.array([t.size])  # points per group; intervals join neighbours in a group
        while True:
            last = np.cumsum(counts) - 1
            pair = np.setdiff1d(np.arange(t.size - 1), last)  # interval i: points i, i+1
            vectors = radec_to_xyz(ra, dec)
            distance = np.degrees(np.arccos(np.clip(vectors @ centre_vector, -1.0, 1.0)))
            chord = np.linalg.norm(vectors[pair + 1] - vectors[pair], axis=1)
            length = np.degrees(2 * np.arcsin(np.clip(chord / 2, 0.0, 1.0)))
            near = np.minimum(distance[pair], distance[pair + 1]) - 1.01 * length <= radius
            refine = near & (length > step)
            if not refine.any():
                break
            splits = np.clip(np.ceil(length[refine] / step), 2, 64).astype(np.int64)
            if int(splits.sum()) > budget:
                break
            budget -= int(splits.sum())
            counts = splits + 1
            lo, hi = t[pair[refine]], t[pair[refine] + 1]
            position = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts,
                                                                counts)
            fraction = position / np.repeat(splits, counts)
            t = np.repeat(lo, counts) + np.repeat(hi - lo, counts) * fraction
            ra, dec = piece(t)
            parts_ra.append(ra)
            parts_dec.append(dec)
    return np.concatenate(parts_ra), np.concatenate(parts_dec)


def inside(region: Shape, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Which ICRS points lie inside a Circle, Range or Polygon."""
    if isinstance(region, Circle):
        return angular_distance(region.ra, region.dec, ra, dec) <= region.radius
    if isinstance(region, Range):
        return in_range(region, ra, dec)
    if isinstance(region, Polygon):
        vertices = radec_to_xyz(*np.array(region.vertices, dtype=float).T)
        return points_in_polygon(radec_to_xyz(ra, dec), vertices)
    raise TypeError(f"no inside test for {type(region).__name__}")


def region_centre_radius(region: Shape) -> tuple[float, float, float]:
    if isinstance(region, Circle):
        return region.ra, region.dec, region.radius
    if isinstance(region, Polygon):
        ra, dec = np.array(region.vertices, dtype=float).T
        centre = radec_to_xyz(ra, dec).sum(axis=0)
        cra, cdec = xyz_to_radec(centre / np.linalg.norm(centre))
        return float(cra), float(cdec), float(np.max(angular_distance(cra, cdec, ra, dec)))
    return 0.0, 0.0, 180.0  # Range: no cheap bound
