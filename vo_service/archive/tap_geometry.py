"""ADQL geometry (ADQL 2.1 §4.2) as scalar functions for SQLite: values, predicates, boxes.

Geometry values travel through SQL as text: ``point ra dec``, ``circle ra dec r`` or
``polygon ra1 dec1 ra2 dec2 ...`` (DALI order, degrees, ICRS); an index footprint
(``images.s_region``, JSON vertices ``[[ra, dec], ...]``) is read as a polygon. Every
function is pure Python on 3-vectors (no numpy: one call per row must be cheap), and decoded
shapes are cached, so a join that tests one footprint against many points decodes it once.
Polygon edges are great-circle arcs; polygons must be smaller than a hemisphere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

Vector = tuple[float, float, float]


class GeometryError(ValueError):
    """A geometry argument that describes no region; the message says what to fix."""


# --- vectors --------------------------------------------------------------------------------


def xyz(ra: float, dec: float) -> Vector:
    """Unit vector of ICRS degrees."""
    a, d = math.radians(ra), math.radians(dec)
    c = math.cos(d)
    return (c * math.cos(a), c * math.sin(a), math.sin(d))


def _dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vector, b: Vector) -> Vector:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _norm(a: Vector) -> float:
    return math.sqrt(_dot(a, a))


def _unit(a: Vector) -> Vector:
    n = _norm(a)
    return (a[0] / n, a[1] / n, a[2] / n)


def angle(a: Vector, b: Vector) -> float:
    """Angle between unit vectors, degrees (stable for tiny angles)."""
    return math.degrees(math.atan2(_norm(_cross(a, b)), _dot(a, b)))


def radec(v: Vector) -> tuple[float, float]:
    """(ra in [0, 360), dec) of a vector."""
    ra = math.degrees(math.atan2(v[1], v[0])) % 360.0
    return ra, math.degrees(math.atan2(v[2], math.hypot(v[0], v[1])))


# --- shapes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    ra: float
    dec: float

    @property
    def vector(self) -> Vector:
        return xyz(self.ra, self.dec)


@dataclass(frozen=True)
class Circle:
    ra: float
    dec: float
    radius: float

    @property
    def vector(self) -> Vector:
        return xyz(self.ra, self.dec)


@dataclass(frozen=True)
class Polygon:
    """Vertices (ra, dec) with their unit vectors and a gnomonic projection for tests."""

    vertices: tuple[tuple[float, float], ...]
    vectors: tuple[Vector, ...]
    centre: Vector
    radius: float  # bounding cone radius, deg
    east: Vector
    north: Vector
    projected: tuple[tuple[float, float], ...]
    cos_radius: float  # cosine of the bounding cone radius (pre-test by dot product)
    normals: tuple[Vector, ...] | None  # inward edge normals of a convex polygon, else None

    def project(self, v: Vector) -> tuple[float, float] | None:
        depth = _dot(v, self.centre)
        if depth <= 1e-9:
            return None
        return _dot(v, self.east) / depth, _dot(v, self.north) / depth

    def contains_vector(self, v: Vector) -> bool:
        """Inside or on the boundary: edge half-spaces for convex polygons (the common
        footprint), else an even-odd test in the gnomonic plane (great circles are straight
        lines there)."""
        if _dot(v, self.centre) < self.cos_radius - 1e-12:
            return False
        if self.normals is not None:
            x, y, z = v
            return all(n[0] * x + n[1] * y + n[2] * z >= -1e-15 for n in self.normals)
        p = self.project(v)
        if p is None:
            return False
        px, py = p
        inside = False
        pts = self.projected
        for k in range(len(pts)):
            x0, y0 = pts[k - 1]
            x1, y1 = pts[k]
            if (y0 > py) != (y1 > py) and px < x0 + (py - y0) * (x1 - x0) / (y1 - y0):
                inside = not inside
        return inside or self.edge_distance(v) < 1e-9

    def edges(self) -> list[tuple[Vector, Vector]]:
        vs = self.vectors
        return [(vs[k - 1], vs[k]) for k in range(len(vs))]

    def edge_distance(self, p: Vector) -> float:
        """Smallest angle (deg) from ``p`` to the polygon's boundary arcs."""
        best = 180.0
        for a, b in self.edges():
            normal = _cross(a, b)
            length = _norm(normal)
            if length > 1e-15:
                n = (normal[0] / length, normal[1] / length, normal[2] / length)
                if _dot(_cross(a, p), n) >= 0 and _dot(_cross(p, b), n) >= 0:
                    best = min(best, math.degrees(math.asin(min(1.0, abs(_dot(n, p))))))
                    continue
            best = min(best, angle(a, p), angle(b, p))
        return best


Shape = Point | Circle | Polygon


def make_point(ra: float, dec: float) -> Point:
    _check_lat(dec, "POINT")
    return Point(float(ra) % 360.0 if ra != 360.0 else 360.0, float(dec))


def make_circle(ra: float, dec: float, radius: float) -> Circle:
    _check_lat(dec, "CIRCLE")
    if not (math.isfinite(radius) and 0.0 <= radius <= 180.0):
        raise GeometryError(f"CIRCLE: radius must be in [0, 180] degrees, got {radius}")
    return Circle(float(ra) % 360.0, float(dec), float(radius))


def make_polygon(vertices: list[tuple[float, float]]) -> Polygon:
    if len(vertices) < 3:
        raise GeometryError(f"POLYGON needs at least 3 vertices, got {len(vertices)}")
    for _, dec in vertices:
        _check_lat(dec, "POLYGON")
    return _polygon(tuple((float(a) % 360.0, float(d)) for a, d in vertices))


@lru_cache(maxsize=65536)
def _polygon(vertices: tuple[tuple[float, float], ...]) -> Polygon:
    vectors = tuple(xyz(a, d) for a, d in vertices)
    total = (sum(v[0] for v in vectors), sum(v[1] for v in vectors),
             sum(v[2] for v in vectors))
    if _norm(total) < 1e-12:
        raise GeometryError("POLYGON: the vertices enclose no region smaller than a hemisphere")
    centre = _unit(total)
    radius = max(angle(v, centre) for v in vectors)
    if radius >= 90.0:
        raise GeometryError("POLYGON: must be smaller than a hemisphere")
    pole = (0.0, 0.0, 1.0)
    east = _cross(pole, centre)
    east = (0.0, 1.0, 0.0) if _norm(east) < 1e-12 else _unit(east)
    north = _cross(centre, east)
    projected = []
    for v in vectors:
        depth = _dot(v, centre)
        projected.append((_dot(v, east) / depth, _dot(v, north) / depth))
    cos_radius = math.cos(math.radians(radius + 1e-9))
    return Polygon(vertices, vectors, centre, radius, east, north, tuple(projected),
                   cos_radius, _convex_normals(vectors, centre))


def _convex_normals(vectors: tuple[Vector, ...], centre: Vector) -> tuple[Vector, ...] | None:
    """Unit normals of the edges' great circles pointing inside, when the polygon is convex
    (every other vertex and the centre on the inner side of every edge), else None."""
    normals = []
    for k in range(len(vectors)):
        a, b = vectors[k - 1], vectors[k]
        normal = _cross(a, b)
        length = _norm(normal)
        if length < 1e-15:
            return None
        normal = (normal[0] / length, normal[1] / length, normal[2] / length)
        if _dot(normal, centre) < 0:
            normal = (-normal[0], -normal[1], -normal[2])
        if any(_dot(normal, v) < -1e-12 for v in vectors):
            return None
        normals.append(normal)
    return tuple(normals)


def _check_lat(dec: float, what: str) -> None:
    if dec is None or not math.isfinite(dec) or not -90.0 <= dec <= 90.0:
        raise GeometryError(f"{what}: latitude {dec} is outside [-90, 90] degrees")


def make_box(ra: float, dec: float, width: float, height: float) -> Polygon:
    """ADQL BOX (deprecated): the polygon of the four corners ra±w/2, dec±h/2."""
    if not (width > 0 and height > 0):
        raise GeometryError("BOX: width and height must be positive")
    lo, hi = dec - height / 2.0, dec + height / 2.0
    if lo < -90.0 or hi > 90.0:
        raise GeometryError("BOX: extends beyond a pole")
    half = width / 2.0
    return make_polygon([(ra - half, lo), (ra + half, lo), (ra + half, hi), (ra - half, hi)])


# --- text encoding --------------------------------------------------------------------------


def encode(shape: Shape) -> str:
    """The SQL value of a shape."""
    if isinstance(shape, Point):
        return f"point {shape.ra!r} {shape.dec!r}"
    if isinstance(shape, Circle):
        return f"circle {shape.ra!r} {shape.dec!r} {shape.radius!r}"
    return "polygon " + " ".join(f"{a!r} {d!r}" for a, d in shape.vertices)


@lru_cache(maxsize=65536)
def decode(text: str) -> Shape:
    """A shape from its SQL value (or from an index footprint's JSON vertices)."""
    if text.startswith("["):
        return _polygon(tuple((float(a), float(d)) for a, d in json.loads(text)))
    kind, _, rest = text.partition(" ")
    numbers = [float(x) for x in rest.split()]
    if kind == "point" and len(numbers) == 2:
        return Point(*numbers)
    if kind == "circle" and len(numbers) == 3:
        return Circle(*numbers)
    if kind == "polygon" and len(numbers) >= 6 and len(numbers) % 2 == 0:
        return _polygon(tuple(zip(numbers[::2], numbers[1::2], strict=True)))
    raise GeometryError(f"not a geometry value: {text[:40]!r}")


def dali_values(text: str | None) -> list[float] | None:
    """The DALI array (point: 2, circle: 3, polygon: 2n numbers) of a geometry value."""
    if text is None:
        return None
    shape = decode(text)
    if isinstance(shape, Point):
        return [shape.ra, shape.dec]
    if isinstance(shape, Circle):
        return [shape.ra, shape.dec, shape.radius]
    return [c for vertex in shape.vertices for c in vertex]


def stc_s(text: str | None) -> str | None:
    """A geometry value as STC-S (``Polygon ICRS ...``, ``Circle ICRS ...``, ``Position
    ICRS ...``), the ObsCore form of an ADQL region."""
    if text is None:
        return None
    shape = decode(text)
    if isinstance(shape, Point):
        return f"Position ICRS {shape.ra!r} {shape.dec!r}"
    if isinstance(shape, Circle):
        return f"Circle ICRS {shape.ra!r} {shape.dec!r} {shape.radius!r}"
    return "Polygon ICRS " + " ".join(f"{a!r} {d!r}" for a, d in shape.vertices)


# --- predicates and measures ----------------------------------------------------------------


def contains(inner: Shape, outer: Shape) -> bool:
    """ADQL CONTAINS: ``inner`` lies within ``outer`` (boundary included)."""
    if isinstance(outer, Point):
        return isinstance(inner, Point) and angle(inner.vector, outer.vector) < 1e-9
    if isinstance(inner, Point):
        v = inner.vector
        if isinstance(outer, Circle):
            return angle(v, outer.vector) <= outer.radius + 1e-12
        return outer.contains_vector(v)
    if isinstance(inner, Circle):
        if isinstance(outer, Circle):
            return angle(inner.vector, outer.vector) + inner.radius <= outer.radius + 1e-12
        return (outer.contains_vector(inner.vector)
                and outer.edge_distance(inner.vector) >= inner.radius)
    if isinstance(outer, Circle):  # a cap is convex: the vertices decide
        c = outer.vector
        return all(angle(v, c) <= outer.radius + 1e-12 for v in inner.vectors)
    return (all(outer.contains_vector(v) for v in inner.vectors)
            and not _edges_cross(inner, outer))


def intersects(first: Shape, second: Shape) -> bool:
    """ADQL INTERSECTS: the shapes share a point (a POINT argument acts as CONTAINS)."""
    if isinstance(first, Point):
        return contains(first, second)
    if isinstance(second, Point):
        return contains(second, first)
    if isinstance(first, Circle) and isinstance(second, Circle):
        return angle(first.vector, second.vector) <= first.radius + second.radius + 1e-12
    if isinstance(first, Circle) or isinstance(second, Circle):
        circle, polygon = (first, second) if isinstance(first, Circle) else (second, first)
        assert isinstance(circle, Circle) and isinstance(polygon, Polygon)
        c = circle.vector
        return polygon.contains_vector(c) or polygon.edge_distance(c) <= circle.radius
    assert isinstance(first, Polygon) and isinstance(second, Polygon)
    if angle(first.centre, second.centre) > first.radius + second.radius + 1e-9:
        return False
    return (any(second.contains_vector(v) for v in first.vectors)
            or any(first.contains_vector(v) for v in second.vectors)
            or _edges_cross(first, second))


def _orient(a: Vector, b: Vector, c: Vector) -> int:
    value = _dot(_cross(a, b), c)
    return (value > 0) - (value < 0)


def _edges_cross(first: Polygon, second: Polygon) -> bool:
    for a, b in first.edges():
        for c, d in second.edges():
            acb = -_orient(a, b, c)
            if acb != 0 and acb == _orient(a, b, d) == -_orient(c, d, b) == _orient(c, d, a):
                return True
    return False


def distance(first: Shape, second: Shape) -> float:
    """ADQL DISTANCE between two points, degrees."""
    if not (isinstance(first, Point) and isinstance(second, Point)):
        raise GeometryError("DISTANCE takes two POINTs (or four numbers)")
    return angle(first.vector, second.vector)


def area(shape: Shape) -> float:
    """ADQL AREA in square degrees (a point has none)."""
    sr_to_deg2 = (180.0 / math.pi) ** 2
    if isinstance(shape, Point):
        return 0.0
    if isinstance(shape, Circle):
        return 2.0 * math.pi * (1.0 - math.cos(math.radians(shape.radius))) * sr_to_deg2
    # spherical excess from the triangle fan about the centre (Van Oosterom & Strackee)
    total = 0.0
    c = shape.centre
    for a, b in shape.edges():
        numerator = _dot(c, _cross(a, b))
        denominator = 1.0 + _dot(c, a) + _dot(a, b) + _dot(b, c)
        total += 2.0 * math.atan2(numerator, denominator)
    return abs(total) * sr_to_deg2


def centroid(shape: Shape) -> Point:
    """ADQL CENTROID: the centre of a circle, the mean direction of a polygon's vertices."""
    if isinstance(shape, Point):
        return shape
    if isinstance(shape, Circle):
        return Point(shape.ra, shape.dec)
    return Point(*radec(shape.centre))


# --- bounding boxes for the index prefilter -------------------------------------------------


def sky_box(shape: Shape) -> tuple[float, float, float, float]:
    """(ra_lo, ra_hi, dec_lo, dec_hi) holding ``shape``: ra_lo in [0, 360), ra_hi may pass 360
    when the box wraps through RA = 0; a shape around a pole spans every RA."""
    if isinstance(shape, Point):
        return shape.ra % 360.0, shape.ra % 360.0, shape.dec, shape.dec
    if isinstance(shape, Circle):
        return _cone_box(shape.vector, shape.radius)
    return _cone_box(shape.centre, shape.radius)


def _cone_box(centre: Vector, radius: float) -> tuple[float, float, float, float]:
    """The RA/Dec box of a cone (exact: RA half-width asin(sin r / cos dec))."""
    ra, dec = radec(centre)
    pad = radius + 1e-7
    lo, hi = dec - pad, dec + pad
    if hi >= 90.0 or lo <= -90.0:
        return 0.0, 360.0, max(lo, -90.0), min(hi, 90.0)
    half = math.degrees(math.asin(min(1.0, math.sin(math.radians(pad))
                                      / math.cos(math.radians(dec)))))
    start = (ra - half) % 360.0
    return start, start + 2.0 * half, lo, hi


def footprint_box(region_json: str | None) -> str | None:
    """JSON ``[ra_lo, ra_hi, dec_lo, dec_hi]`` of an index footprint (SQLite trigger helper)."""
    if region_json is None:
        return None
    try:
        box = sky_box(decode(region_json))
    except (GeometryError, ValueError, TypeError):
        box = (0.0, 360.0, -90.0, 90.0)
    return json.dumps(box)
