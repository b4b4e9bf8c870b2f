"""Geometry on the unit sphere, the one module for it: the archive's footprint lookups and
the engine's region tests both use it.

Points are 3-D unit vectors (no RA wrap-around, no pole singularities). Polygons are
sequences of unit vectors joined by great-circle arcs, each polygon smaller than a
hemisphere. Containment is a crossing-number test in the gnomonic projection around the
polygon's centre (great circles project to straight lines there, so the test is exact for
great-circle edges). A RANGE's RA interval may wrap through RA = 0 (:func:`range_limits`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vo_service.shapes import Range

Vectors = NDArray[np.float64]


def radec_to_xyz(ra: ArrayLike, dec: ArrayLike) -> Vectors:
    """Unit vectors (..., 3) of ICRS degrees."""
    ra_rad = np.radians(np.asarray(ra, dtype=float))
    dec_rad = np.radians(np.asarray(dec, dtype=float))
    cos_dec = np.cos(dec_rad)
    return np.stack(
        [cos_dec * np.cos(ra_rad), cos_dec * np.sin(ra_rad), np.sin(dec_rad)], axis=-1
    )


def xyz_to_radec(xyz: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """RA in [0, 360) and Dec (degrees) of vectors (..., 3); they need not be normalised."""
    xyz = np.asarray(xyz, dtype=float)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def normalise(xyz: ArrayLike) -> Vectors:
    """Vectors scaled to unit length along the last axis."""
    xyz = np.asarray(xyz, dtype=float)
    return xyz / np.linalg.norm(xyz, axis=-1, keepdims=True)


def angle_deg(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Angle in degrees between unit vectors (broadcast over leading axes), stable near 0."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.degrees(np.arctan2(cross, dot))


def angular_distance(ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike, dec2: ArrayLike
                     ) -> NDArray[np.float64]:
    """Great-circle distance in degrees between ICRS positions (broadcast, stable near 0)."""
    return angle_deg(radec_to_xyz(ra1, dec1), radec_to_xyz(ra2, dec2))


def range_limits(box: Range) -> tuple[float, float, float, float, bool]:
    """(ra_lo, ra_span, dec_lo, dec_hi, all_ra) of a RANGE with open limits resolved.

    The RA interval runs from ``ra_lo`` eastwards over ``ra_span`` degrees, through RA = 0
    when ``ra_min > ra_max``; infinite limits, a span of 360 degrees or more, and equal
    ends on opposite sides of RA = 0 (``360 0``) mean all RA.
    """
    dec_lo = max(box.dec_min, -90.0)
    dec_hi = min(box.dec_max, 90.0)
    if not (math.isfinite(box.ra_min) and math.isfinite(box.ra_max)):
        return 0.0, 360.0, dec_lo, dec_hi, True
    span = (box.ra_max - box.ra_min) % 360.0
    if box.ra_max - box.ra_min >= 360.0 or (span == 0 and box.ra_max != box.ra_min):
        span = 360.0
    return box.ra_min, span, dec_lo, dec_hi, span >= 360.0


def in_range(box: Range, ra: ArrayLike, dec: ArrayLike) -> NDArray[np.bool_]:
    """Which ICRS positions (degrees) lie inside a RANGE, edges included."""
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    ra_lo, span, dec_lo, dec_hi, all_ra = range_limits(box)
    in_dec = (dec >= dec_lo) & (dec <= dec_hi)
    if all_ra:
        return in_dec
    return in_dec & (((ra - ra_lo) % 360.0) <= span)


def tangent_basis(centres: ArrayLike) -> tuple[Vectors, Vectors]:
    """East and north unit vectors (..., 3) of the tangent plane at each centre."""
    centres = np.asarray(centres, dtype=float)
    pole = np.zeros_like(centres)
    pole[..., 2] = 1.0
    east = np.cross(pole, centres)
    norm = np.linalg.norm(east, axis=-1, keepdims=True)
    # At a pole every direction is "east"; pick the x axis.
    at_pole = norm[..., 0] < 1e-12
    east[at_pole] = np.array([0.0, 1.0, 0.0])
    norm[at_pole] = 1.0
    east = east / norm
    north = np.cross(centres, east)
    return east, north


def gnomonic(
    xyz: ArrayLike, centre: ArrayLike, east: ArrayLike, north: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Gnomonic (x, y) of vectors about ``centre``; the mask says which lie in front of it."""
    xyz = np.asarray(xyz, dtype=float)
    depth = np.sum(xyz * centre, axis=-1)
    front = depth > 1e-9
    safe = np.where(front, depth, 1.0)
    return np.sum(xyz * east, axis=-1) / safe, np.sum(xyz * north, axis=-1) / safe, front


def bounding_cone(vertices: ArrayLike) -> tuple[Vectors, float]:
    """Centre (unit vector) and radius (deg) of a cone holding every vertex of a polygon."""
    vertices = np.asarray(vertices, dtype=float)
    centre = normalise(vertices.mean(axis=0))
    return centre, float(angle_deg(vertices, centre).max())


def signed_area_sign(vertices: ArrayLike) -> float:
    """Positive when the polygon runs counter-clockwise as seen from inside the sphere with
    north up and RA increasing to the left (DALI/STC convention): west, north, east, south."""
    vertices = np.asarray(vertices, dtype=float)
    centre = normalise(vertices.mean(axis=0))
    rolled = np.roll(vertices, -1, axis=0)
    # sum(v_i x v_i+1) points outwards for a loop that is counter-clockwise seen from OUTSIDE.
    return -float(np.sum(np.cross(vertices, rolled) @ centre))


def counter_clockwise(vertices: ArrayLike) -> Vectors:
    """The vertices in counter-clockwise order (see :func:`signed_area_sign`)."""
    vertices = np.asarray(vertices, dtype=float)
    return vertices if signed_area_sign(vertices) > 0 else vertices[::-1].copy()


def planar_crossings(
    px: NDArray[np.float64], py: NDArray[np.float64], vx: NDArray[np.float64],
    vy: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Even-odd test of points (M,) in polygons (M, K) given in one plane per row.

    Rows are closed implicitly (last vertex joins the first); repeated vertices (padding)
    make zero-length edges that never cross.
    """
    x0, y0 = vx, vy
    x1, y1 = np.roll(vx, -1, axis=-1), np.roll(vy, -1, axis=-1)
    pyc = py[..., None]
    straddles = (y0 > pyc) != (y1 > pyc)
    dy = np.where(straddles, y1 - y0, 1.0)
    x_cross = x0 + (pyc - y0) * (x1 - x0) / dy
    crossings = straddles & (px[..., None] < x_cross)
    return (np.count_nonzero(crossings, axis=-1) % 2) == 1


def points_in_polygon(points: ArrayLike, vertices: ArrayLike) -> NDArray[np.bool_]:
    """Which of the unit vectors ``points`` (..., 3; one vector counts as (1, 3)) lie inside
    one polygon (K, 3).

    One pass per edge over all points: memory grows with the points, not points x edges.
    """
    points = np.asarray(points, dtype=float)
    leading = points.shape[:-1] or (1,)
    points = points.reshape(-1, 3)
    vertices = np.asarray(vertices, dtype=float)
    centre, _ = bounding_cone(vertices)
    east, north = tangent_basis(centre)
    vx, vy, _ = gnomonic(vertices, centre, east, north)
    px, py, front = gnomonic(points, centre, east, north)
    inside = np.zeros(len(points), dtype=bool)
    previous = len(vx) - 1
    for current in range(len(vx)):
        x0, y0, x1, y1 = vx[current], vy[current], vx[previous], vy[previous]
        if y0 != y1:  # a horizontal edge never crosses the test ray
            straddles = (y0 > py) != (y1 > py)
            inside ^= straddles & (px < x0 + (py - y0) * (x1 - x0) / (y1 - y0))
        previous = current
    return (inside & front).reshape(leading)


def _orient(a: Vectors, b: Vectors, c: Vectors) -> NDArray[np.float64]:
    return np.sign(np.sum(np.cross(a, b) * c, axis=-1))


def arcs_cross(a: Vectors, b: Vectors, c: Vectors, d: Vectors) -> NDArray[np.bool_]:
    """Whether great-circle arcs AB and CD (each < 180 deg) cross (S2's crossing rule)."""
    acb = -_orient(a, b, c)
    bda = _orient(a, b, d)
    cbd = -_orient(c, d, b)
    dac = _orient(c, d, a)
    return (acb != 0) & (acb == bda) & (acb == cbd) & (acb == dac)


def polygons_intersect(first: ArrayLike, second: ArrayLike) -> bool:
    """Whether two spherical polygons (each < a hemisphere) overlap or touch."""
    first = np.asarray(first, dtype=float)
    second = np.asarray(second, dtype=float)
    if points_in_polygon(first, second).any() or points_in_polygon(second, first).any():
        return True
    a, b = first[:, None, :], np.roll(first, -1, axis=0)[:, None, :]
    c, d = second[None, :, :], np.roll(second, -1, axis=0)[None, :, :]
    shape = (len(first), len(second), 3)
    return bool(arcs_cross(*(np.broadcast_to(v, shape) for v in (a, b, c, d))).any())


def arc_distances(point: ArrayLike, a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Angles (deg) from a unit vector to the great-circle arcs from ``a`` to ``b`` (unit
    vectors, broadcast over leading axes: the edges of many polygons at once)."""
    p = np.asarray(point, dtype=float)
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    normal = np.cross(a, b)
    length = np.linalg.norm(normal, axis=-1)
    ok = length > 1e-15
    normal = normal / np.where(ok, length, 1.0)[..., None]
    within = ok & (np.sum(np.cross(a, p) * normal, axis=-1) >= 0) & (
        np.sum(np.cross(p, b) * normal, axis=-1) >= 0
    )
    to_circle = np.degrees(np.arcsin(np.clip(np.abs(np.sum(normal * p, axis=-1)), 0.0, 1.0)))
    to_ends = np.minimum(angle_deg(a, p), angle_deg(b, p))
    return np.where(within, to_circle, to_ends)
