"""Sky-side geometry of the SODA shapes: boundary samples, inside tests, distances.

Pure numpy on ICRS degrees (unit vectors on the sphere); `geometry` projects the samples.
"""

from __future__ import annotations

import math

import numpy as np

from vo_service.shapes import Circle, Polygon, Range, Shape

CIRCLE_SAMPLES = 256
EDGE_SAMPLES = 64


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


def circle_boundary(circle: Circle) -> tuple[np.ndarray, np.ndarray]:
    """Points at `radius` from the centre in every direction (spherical offsets)."""
    pa = np.linspace(0.0, 2 * np.pi, CIRCLE_SAMPLES, endpoint=False)
    dec0, ra0, r = math.radians(circle.dec), math.radians(circle.ra), math.radians(circle.radius)
    sin_dec = math.sin(dec0) * math.cos(r) + math.cos(dec0) * math.sin(r) * np.cos(pa)
    dec = np.arcsin(np.clip(sin_dec, -1.0, 1.0))
    ra = ra0 + np.arctan2(
        np.sin(pa) * math.sin(r) * math.cos(dec0), math.cos(r) - math.sin(dec0) * sin_dec
    )
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _great_circle(a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    va, vb = unit_vectors(np.array(a[0]), np.array(a[1])), unit_vectors(
        np.array(b[0]), np.array(b[1])
    )
    t = np.linspace(0.0, 1.0, EDGE_SAMPLES, endpoint=False)[:, None]
    points = va * (1 - t) + vb * t
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def polygon_boundary(polygon: Polygon) -> tuple[np.ndarray, np.ndarray]:
    vertices = polygon.vertices
    edges = [
        _great_circle(vertices[i], vertices[(i + 1) % len(vertices)])
        for i in range(len(vertices))
    ]
    return to_radec(np.concatenate(edges))


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


def range_boundary(box: Range) -> tuple[np.ndarray, np.ndarray]:
    ra_lo, span, dec_lo, dec_hi, all_ra = _range_limits(box)
    n = EDGE_SAMPLES * 4
    ras = (ra_lo + np.linspace(0.0, span, n)) % 360.0
    decs = np.linspace(dec_lo, dec_hi, n)
    parts_ra = [ras, ras]
    parts_dec = [np.full(n, dec_lo), np.full(n, dec_hi)]
    if not all_ra:
        parts_ra += [np.full(n, ra_lo), np.full(n, (ra_lo + span) % 360.0)]
        parts_dec += [decs, decs]
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
