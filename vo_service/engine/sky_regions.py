"""Sky-side geometry of the SODA shapes: boundary samples, inside tests, distances.

`boundary_near` samples a region's boundary coarsely everywhere and densely (at a given
angular step) only where it passes near an image, so a boundary crossing a small image
is followed pixel by pixel without sampling the whole sky finely.

Pure numpy on ICRS degrees (unit vectors on the sphere); `geometry` projects the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from vo_service.shapes import Circle, Polygon, Range, Shape

COARSE_SAMPLES = 256  # per boundary piece, before densifying near the image
MAX_DENSE_SAMPLES = 200_000  # per region: the step grows beyond this

Piece = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # t in [0, 1] -> (ra, dec)


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def to_radec(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def angular_distance(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (vectorized, numerically stable)."""
    v1 = unit_vectors(np.asarray(ra1, float), np.asarray(dec1, float))
    v2 = unit_vectors(np.asarray(ra2, float), np.asarray(dec2, float))
    cross = np.linalg.norm(np.cross(v1, v2), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(v1 * v2, axis=-1)))


def _range_limits(box: Range) -> tuple[float, float, float, float, bool]:
    """(ra_lo, ra_span, dec_lo, dec_hi, all_ra) of a Range with open limits resolved."""
    dec_lo = max(box.dec_min, -90.0)
    dec_hi = min(box.dec_max, 90.0)
    all_ra = not (math.isfinite(box.ra_min) and math.isfinite(box.ra_max))
    if all_ra:
        return 0.0, 360.0, dec_lo, dec_hi, True
    span = (box.ra_max - box.ra_min) % 360.0
    if box.ra_max - box.ra_min >= 360.0 or (span == 0 and box.ra_max != box.ra_min):
        span = 360.0
    return box.ra_min, span, dec_lo, dec_hi, span >= 360.0


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
    va = unit_vectors(np.array(a[0]), np.array(a[1]))
    vb = unit_vectors(np.array(b[0]), np.array(b[1]))
    angle = math.atan2(float(np.linalg.norm(np.cross(va, vb))), float(va @ vb))

    def point(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if angle < 1e-12:
            return np.full(t.shape, a[0] % 360.0), np.full(t.shape, float(a[1]))
        wa = np.sin((1 - t) * angle) / math.sin(angle)
        wb = np.sin(t * angle) / math.sin(angle)
        return to_radec(wa[:, None] * va + wb[:, None] * vb)
    return point


def _range_pieces(box: Range) -> list[Piece]:
    ra_lo, span, dec_lo, dec_hi, all_ra = _range_limits(box)

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
    centre_vector = unit_vectors(np.array(centre[0]), np.array(centre[1]))
    for piece in boundary_pieces(region):
        t = np.linspace(0.0, 1.0, COARSE_SAMPLES + 1)
        ra, dec = piece(t)
        parts_ra.append(ra)
        parts_dec.append(dec)
        counts = np.array([t.size])  # points per group; intervals join neighbours in a group
        while True:
            last = np.cumsum(counts) - 1
            pair = np.setdiff1d(np.arange(t.size - 1), last)  # interval i: points i, i+1
            vectors = unit_vectors(ra, dec)
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
        ra_lo, span, dec_lo, dec_hi, all_ra = _range_limits(region)
        in_dec = (dec >= dec_lo) & (dec <= dec_hi)
        if all_ra:
            return in_dec
        return in_dec & (((ra - ra_lo) % 360.0) <= span)
    if isinstance(region, Polygon):
        return _inside_polygon(region, ra, dec)
    raise TypeError(f"no inside test for {type(region).__name__}")


def _inside_polygon(polygon: Polygon, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Point in spherical polygon: gnomonic projection about the polygon's centre."""
    verts = unit_vectors(*np.array(polygon.vertices, dtype=float).T)
    centre = verts.sum(axis=0)
    centre /= np.linalg.norm(centre)
    east = np.cross([0.0, 0.0, 1.0], centre)
    if np.linalg.norm(east) < 1e-12:
        east = np.array([0.0, 1.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(centre, east)

    def project(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        depth = vectors @ centre
        with np.errstate(divide="ignore", invalid="ignore"):
            return vectors @ east / depth, vectors @ north / depth, depth > 1e-9

    px, py, _ = project(verts)
    qx, qy, front = project(unit_vectors(ra, dec))
    inside = np.zeros(qx.shape, dtype=bool)
    j = len(px) - 1
    for i in range(len(px)):
        crosses = (py[i] > qy) != (py[j] > qy)
        with np.errstate(divide="ignore", invalid="ignore"):
            at_x = (px[j] - px[i]) * (qy - py[i]) / (py[j] - py[i]) + px[i]
        inside ^= crosses & (qx < at_x)
        j = i
    return inside & front


def region_centre_radius(region: Shape) -> tuple[float, float, float]:
    if isinstance(region, Circle):
        return region.ra, region.dec, region.radius
    if isinstance(region, Polygon):
        ra, dec = np.array(region.vertices, dtype=float).T
        centre = unit_vectors(ra, dec).sum(axis=0)
        cra, cdec = to_radec(centre / np.linalg.norm(centre))
        return float(cra), float(cdec), float(np.max(angular_distance(cra, cdec, ra, dec)))
    return 0.0, 0.0, 180.0  # Range: no cheap bound
