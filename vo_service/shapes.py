"""Sky regions shared by every part: the SODA/SIA shapes and a centre + size box.

All coordinates are ICRS degrees. These are plain values, validated on construction;
the protocols parse text into them, the archive intersects footprints with them and the
engine turns them into pixel boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_POLYGON_VERTICES = 1000  # the self-intersection check compares every pair of edges
ANGLE_UNITS_DEG = {"deg": 1.0, "arcmin": 1.0 / 60.0, "arcsec": 1.0 / 3600.0}


class ShapeError(ValueError):
    """A region that cannot describe a piece of sky; the message says what to fix."""


def _check_lon_lat(lon: float, lat: float, what: str) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ShapeError(f"{what}: coordinates must be finite numbers, got {lon} {lat}")
    if not 0.0 <= lon <= 360.0:
        raise ShapeError(f"{what}: RA {lon} is outside [0, 360] degrees")
    if not -90.0 <= lat <= 90.0:
        raise ShapeError(f"{what}: Dec {lat} is outside [-90, 90] degrees")


@dataclass(frozen=True)
class Circle:
    """A cone: centre (ra, dec) and radius, degrees (DALI circle)."""

    ra: float
    dec: float
    radius: float

    def __post_init__(self) -> None:
        _check_lon_lat(self.ra, self.dec, "CIRCLE")
        if not (math.isfinite(self.radius) and 0.0 < self.radius <= 180.0):
            raise ShapeError(f"CIRCLE: radius must be in (0, 180] degrees, got {self.radius}")


@dataclass(frozen=True)
class Range:
    """A coordinate range (SODA POS RANGE); ra_min > ra_max wraps through RA = 0.

    Infinite limits mean "open": RA -inf..+inf is all RA, Dec -inf..+inf all Dec.
    """

    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float

    def __post_init__(self) -> None:
        for name in ("ra_min", "ra_max", "dec_min", "dec_max"):
            if math.isnan(getattr(self, name)):
                raise ShapeError(f"RANGE: {name} is NaN")
        for name in ("ra_min", "ra_max"):
            value = getattr(self, name)
            if math.isfinite(value) and not 0.0 <= value <= 360.0:
                raise ShapeError(f"RANGE: {name} {value} is outside [0, 360] degrees")
        for name in ("dec_min", "dec_max"):
            value = getattr(self, name)
            if math.isfinite(value) and not -90.0 <= value <= 90.0:
                raise ShapeError(f"RANGE: {name} {value} is outside [-90, 90] degrees")
        if self.dec_min > self.dec_max:
            raise ShapeError("RANGE: the lower Dec limit exceeds the upper one")

    @property
    def wraps(self) -> bool:
        """True when the RA interval runs through RA = 0 (ra_min > ra_max)."""
        return self.ra_min > self.ra_max


@dataclass(frozen=True)
class Polygon:
    """A spherical polygon, vertices (ra, dec) in degrees joined by great circles."""

    vertices: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.vertices) > MAX_POLYGON_VERTICES:
            raise ShapeError(f"POLYGON: at most {MAX_POLYGON_VERTICES} vertices, got "
                             f"{len(self.vertices)}; simplify the outline")
        if len(self.vertices) < 3:
            raise ShapeError(
                f"POLYGON: needs at least 3 vertices (6 numbers), got {len(self.vertices)}"
            )
        for lon, lat in self.vertices:
            _check_lon_lat(lon, lat, "POLYGON")
        _check_simple_polygon(self.vertices)


def _check_simple_polygon(vertices: tuple[tuple[float, float], ...]) -> None:
    """Refuse polygons that enclose no area or whose edges cross (a bow-tie has no inside).

    Great-circle edges are straight lines in the gnomonic projection about the vertices'
    mean direction, so the tests are planar there: a shoelace area and, for every pair of
    non-adjacent edges, a strict crossing of orientations. Repeated vertices are allowed.
    """
    ra, dec = np.radians(np.asarray(vertices, dtype=float).T)
    xyz = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)
    mean = xyz.mean(axis=0)
    if np.linalg.norm(mean) < 1e-9:
        raise ShapeError("POLYGON: the vertices surround the whole sky; a polygon must be "
                         "smaller than a hemisphere")
    centre = mean / np.linalg.norm(mean)
    east = np.cross([0.0, 0.0, 1.0], centre)
    east = east / np.linalg.norm(east) if np.linalg.norm(east) > 1e-12 else np.array([0, 1.0, 0])
    north = np.cross(centre, east)
    depth = xyz @ centre
    if np.any(depth <= 1e-9):
        raise ShapeError("POLYGON: a polygon must be smaller than a hemisphere")
    x, y = (xyz @ east) / depth, (xyz @ north) / depth
    x1, y1 = np.roll(x, -1), np.roll(y, -1)

    def orientation(ax, ay, bx, by, cx, cy):  # noqa: ANN001, ANN202 - numpy arrays
        return np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))

    count = len(x)
    for i in range(count - 2):  # edge i against the later edges not adjacent to it
        j = np.arange(i + 2, count - 1 if i == 0 else count)
        ax, ay, bx, by = x[i], y[i], x1[i], y1[i]
        cx, cy, dx, dy = x[j], y[j], x1[j], y1[j]
        crosses = (
            (orientation(ax, ay, bx, by, cx, cy) * orientation(ax, ay, bx, by, dx, dy) < 0)
            & (orientation(cx, cy, dx, dy, ax, ay) * orientation(cx, cy, dx, dy, bx, by) < 0))
        if crosses.any():
            raise ShapeError(
                f"POLYGON: the polygon is self-intersecting (edge {i + 1} crosses edge "
                f"{int(j[crosses][0]) + 1}); list the vertices in order around the region")
    extent = max(float(np.ptp(x)), float(np.ptp(y)))
    if abs(float(np.sum(x * y1 - x1 * y))) <= 1e-9 * extent**2:
        raise ShapeError("POLYGON: the vertices lie on one line and enclose no area; give "
                         "at least three vertices that are not on one great circle")


@dataclass(frozen=True)
class CenterSize:
    """A box of width x height around (ra, dec); unit 'pix', 'arcsec', 'arcmin' or 'deg'.

    This is the astrocut-style request (centre + cutout size), not a SODA shape.
    """

    ra: float
    dec: float
    width: float
    height: float
    unit: str = "pix"

    def __post_init__(self) -> None:
        _check_lon_lat(self.ra, self.dec, "position")
        if self.unit not in ANGLE_UNITS_DEG and self.unit != "pix":
            raise ShapeError(f"size unit must be pix, arcsec, arcmin or deg, got {self.unit!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ShapeError(f"cutout {name} must be a positive number, got {value}")


Shape = Circle | Range | Polygon | CenterSize
