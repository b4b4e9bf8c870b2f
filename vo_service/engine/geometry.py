"""Sky regions to pixel boxes: ICRS positions into any image frame and projection.

All world->pixel conversions for a batch of regions go through ONE vectorized call
(`SkyToPixel.pixels`), with distortions (SIP, lookup tables, DSS plate solutions)
applied by `all_world2pix`. Regions other than centre+size boxes become the bounding
box of their boundary sampled densely, united with the image sample points that lie
inside the region (so a region containing the whole image, a pole or an edge gives the
right box).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from astropy.coordinates import ICRS, SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import wcs_to_celestial_frame

from vo_service.shapes import ANGLE_UNITS_DEG, CenterSize, Circle, Polygon, Range, Shape

CIRCLE_SAMPLES = 256
EDGE_SAMPLES = 64
GRID_STEPS = 32
ANGLE_STEP_DEG = 1e-4  # finite-difference step for the local pixel scale


@dataclass(frozen=True)
class PixelBox:
    """0-based, half-open pixel ranges per FITS axis (axis 1 first).

    A padded box may extend past the image; `clip` gives the part inside it.
    """

    ranges: tuple[tuple[int, int], ...]

    @property
    def x0(self) -> int:
        return self.ranges[0][0]

    @property
    def x1(self) -> int:
        return self.ranges[0][1]

    @property
    def y0(self) -> int:
        return self.ranges[1][0]

    @property
    def y1(self) -> int:
        return self.ranges[1][1]

    @property
    def shape(self) -> tuple[int, ...]:
        """Numpy-order shape (last FITS axis first)."""
        return tuple(stop - start for start, stop in reversed(self.ranges))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def slices(self) -> tuple[slice, ...]:
        """Numpy-order slices of this box (only valid when inside the image)."""
        return tuple(slice(start, stop) for start, stop in reversed(self.ranges))

    def clip(self, fits_shape: Sequence[int]) -> PixelBox | None:
        """The part of the box inside an image of `fits_shape` (axis 1 first), or None."""
        clipped = tuple(
            (max(start, 0), min(stop, length))
            for (start, stop), length in zip(self.ranges, fits_shape, strict=True)
        )
        if any(start >= stop for start, stop in clipped):
            return None
        return PixelBox(clipped)

    def with_ranges(self, extra: Sequence[tuple[int, int]]) -> PixelBox:
        """This box's first two axes followed by `extra` ranges for axes 3, 4, ..."""
        return PixelBox(tuple(self.ranges[:2]) + tuple(extra))

    def fits_ranges(self) -> tuple[tuple[int, int], ...]:
        """1-based inclusive ranges per FITS axis, as written in CUT* header cards."""
        return tuple((start + 1, stop) for start, stop in self.ranges)


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _to_radec(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    dec = np.degrees(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def angular_distance(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (vectorized, numerically stable)."""
    v1 = _unit_vectors(np.asarray(ra1, float), np.asarray(dec1, float))
    v2 = _unit_vectors(np.asarray(ra2, float), np.asarray(dec2, float))
    cross = np.linalg.norm(np.cross(v1, v2), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(v1 * v2, axis=-1)))


class SkyToPixel:
    """ICRS (ra, dec) degrees -> 0-based pixel (x, y) of one image, vectorized.

    Works for any celestial frame astropy knows (ICRS, FK5, FK4, Galactic, ...) and any
    projection or distortion astropy.wcs handles; the celestial axes must be FITS axes 1
    and 2 (in either order).
    """

    def __init__(self, wcs: WCS, fits_shape: Sequence[int]) -> None:
        self.wcs = wcs
        self.celestial = wcs.celestial
        if not wcs.has_celestial or sorted((wcs.wcs.lng, wcs.wcs.lat)) != [0, 1]:
            raise ValueError("the image has no celestial WCS on its first two axes")
        self.frame = wcs_to_celestial_frame(self.celestial)
        self.fits_shape = tuple(int(n) for n in fits_shape)
        self._lng_first = self.celestial.wcs.lng == 0

    def pixels(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (0-based) of ICRS positions; NaN where not projectable."""
        ra = np.asarray(ra, dtype=float)
        dec = np.asarray(dec, dtype=float)
        if ra.size == 0:
            return np.empty(0), np.empty(0)
        if isinstance(self.frame, ICRS):
            lon, lat = ra, dec
        else:
            native = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(self.frame)
            lon = native.spherical.lon.deg
            lat = native.spherical.lat.deg
        world = np.column_stack([lon, lat] if self._lng_first else [lat, lon])
        with np.errstate(invalid="ignore"):
            pix = self.celestial.all_world2pix(world, 0, quiet=True)
        x, y = pix[:, 0].astype(float), pix[:, 1].astype(float)
        bad = ~(np.isfinite(x) & np.isfinite(y))
        x[bad] = np.nan
        y[bad] = np.nan
        return x, y

    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image sample points (pixel x, y) and their ICRS (ra, dec); edges included."""
        nx, ny = self.fits_shape[:2]
        inset = 1e-6  # pixel edges: stay inside the image
        xs = np.linspace(-0.5 + inset, nx - 0.5 - inset, GRID_STEPS + 1)
        ys = np.linspace(-0.5 + inset, ny - 0.5 - inset, GRID_STEPS + 1)
        gx, gy = np.meshgrid(xs, ys)
        gx, gy = gx.ravel(), gy.ravel()
        world = self.celestial.all_pix2world(
            np.column_stack([gx, gy]), 0
        )
        lon, lat = (world[:, 0], world[:, 1]) if self._lng_first else (world[:, 1], world[:, 0])
        good = np.isfinite(lon) & np.isfinite(lat)
        gx, gy, lon, lat = gx[good], gy[good], lon[good], lat[good]
        if isinstance(self.frame, ICRS) or lon.size == 0:
            ra, dec = lon, lat
        else:
            icrs = SkyCoord(lon, lat, unit="deg", frame=self.frame).icrs
            ra, dec = icrs.ra.deg, icrs.dec.deg
        return gx, gy, ra, dec

    @cached_property
    def footprint(self) -> tuple[float, float, float]:
        """(ra, dec, radius) in degrees of a circle containing the image."""
        gx, gy, ra, dec = self.grid
        if ra.size == 0:
            return 0.0, 0.0, 180.0
        centre = _unit_vectors(ra, dec).sum(axis=0)
        if np.linalg.norm(centre) < 1e-9:
            return 0.0, 0.0, 180.0
        cra, cdec = _to_radec(centre / np.linalg.norm(centre))
        radius = float(np.max(angular_distance(cra, cdec, ra, dec)))
        # a coarse grid can miss the far edges of a strongly curved image
        step = radius / GRID_STEPS
        return float(cra), float(cdec), min(180.0, radius + 2 * step)


def _circle_boundary(circle: Circle) -> tuple[np.ndarray, np.ndarray]:
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
    va, vb = _unit_vectors(np.array(a[0]), np.array(a[1])), _unit_vectors(
        np.array(b[0]), np.array(b[1])
    )
    t = np.linspace(0.0, 1.0, EDGE_SAMPLES, endpoint=False)[:, None]
    points = va * (1 - t) + vb * t
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _polygon_boundary(polygon: Polygon) -> tuple[np.ndarray, np.ndarray]:
    vertices = polygon.vertices
    edges = [
        _great_circle(vertices[i], vertices[(i + 1) % len(vertices)])
        for i in range(len(vertices))
    ]
    return _to_radec(np.concatenate(edges))


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


def _range_boundary(box: Range) -> tuple[np.ndarray, np.ndarray]:
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


def _inside(region: Shape, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
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
    verts = _unit_vectors(*np.array(polygon.vertices, dtype=float).T)
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
    qx, qy, front = project(_unit_vectors(ra, dec))
    inside = np.zeros(qx.shape, dtype=bool)
    j = len(px) - 1
    for i in range(len(px)):
        crosses = (py[i] > qy) != (py[j] > qy)
        with np.errstate(divide="ignore", invalid="ignore"):
            at_x = (px[j] - px[i]) * (qy - py[i]) / (py[j] - py[i]) + px[i]
        inside ^= crosses & (qx < at_x)
        j = i
    return inside & front


def _region_centre_radius(region: Shape) -> tuple[float, float, float]:
    if isinstance(region, Circle):
        return region.ra, region.dec, region.radius
    if isinstance(region, Polygon):
        ra, dec = np.array(region.vertices, dtype=float).T
        centre = _unit_vectors(ra, dec).sum(axis=0)
        cra, cdec = _to_radec(centre / np.linalg.norm(centre))
        return float(cra), float(cdec), float(np.max(angular_distance(cra, cdec, ra, dec)))
    return 0.0, 0.0, 180.0  # Range: no cheap bound


def region_boxes(mapper: SkyToPixel, regions: Sequence[Shape]) -> list[PixelBox | None]:
    """Spatial pixel box (axes 1, 2; unclipped) of every region; None where off the sky.

    All sample points of all regions are converted in one vectorized world->pixel call.
    """
    samples_ra: list[np.ndarray] = []
    samples_dec: list[np.ndarray] = []
    for region in regions:
        ra, dec = _samples(region)
        samples_ra.append(ra)
        samples_dec.append(dec)
    counts = np.array([len(part) for part in samples_ra])
    all_x, all_y = mapper.pixels(np.concatenate(samples_ra), np.concatenate(samples_dec))
    splits = np.cumsum(counts)[:-1]
    xs, ys = np.split(all_x, splits), np.split(all_y, splits)
    cra, cdec, cradius = mapper.footprint
    boxes: list[PixelBox | None] = [None] * len(regions)
    centre_sizes = [i for i, region in enumerate(regions) if isinstance(region, CenterSize)]
    if centre_sizes:
        for i, box in zip(centre_sizes, _center_size_boxes(
                [regions[i] for i in centre_sizes], [xs[i] for i in centre_sizes],
                [ys[i] for i in centre_sizes], (cra, cdec, cradius)), strict=True):
            boxes[i] = box
    for i, region in enumerate(regions):
        if not isinstance(region, CenterSize):
            boxes[i] = _boundary_box(mapper, region, xs[i], ys[i], cra, cdec, cradius)
    return boxes


def _samples(region: Shape) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(region, CenterSize):
        if region.unit == "pix":
            return np.array([region.ra]), np.array([region.dec])
        # centre plus a small step north and east for the local pixel scale
        dec_step = ANGLE_STEP_DEG if region.dec < 89.0 else -ANGLE_STEP_DEG
        ra_step = ANGLE_STEP_DEG / max(math.cos(math.radians(region.dec)), 1e-6)
        return (
            np.array([region.ra, region.ra, (region.ra + ra_step) % 360.0]),
            np.array([region.dec, region.dec + dec_step, region.dec]),
        )
    if isinstance(region, Circle):
        ra, dec = _circle_boundary(region)
        return np.append(ra, region.ra), np.append(dec, region.dec)
    if isinstance(region, Polygon):
        return _polygon_boundary(region)
    if isinstance(region, Range):
        return _range_boundary(region)
    raise TypeError(f"unsupported region {region!r}")


def _center_size_boxes(regions: list[CenterSize], xs: list[np.ndarray], ys: list[np.ndarray],
                       footprint: tuple[float, float, float]) -> list[PixelBox | None]:
    """Boxes of centre+size regions, vectorized over the regions."""
    centre_x = np.array([x[0] for x in xs])
    centre_y = np.array([y[0] for y in ys])
    widths = np.array([region.width for region in regions], dtype=float)
    heights = np.array([region.height for region in regions], dtype=float)
    half_diag = np.zeros(len(regions))
    valid = np.isfinite(centre_x) & np.isfinite(centre_y)
    for k, region in enumerate(regions):
        if region.unit == "pix":
            continue
        x, y = xs[k], ys[k]
        if not np.all(np.isfinite(x) & np.isfinite(y)):
            valid[k] = False
            continue
        north = (x[1] - x[0], y[1] - y[0])
        east = (x[2] - x[0], y[2] - y[0])
        per_deg = math.sqrt(abs(north[0] * east[1] - north[1] * east[0])) / ANGLE_STEP_DEG
        to_deg = ANGLE_UNITS_DEG[region.unit]
        widths[k] *= to_deg * per_deg
        heights[k] *= to_deg * per_deg
        half_diag[k] = math.hypot(region.width, region.height) * to_deg / 2
    widths = np.maximum(np.round(widths), 1).astype(np.int64)
    heights = np.maximum(np.round(heights), 1).astype(np.int64)
    ras = np.array([region.ra for region in regions])
    decs = np.array([region.dec for region in regions])
    cra, cdec, cradius = footprint
    # the far side of the sky can project back onto the image (e.g. TAN): check distance
    valid &= angular_distance(cra, cdec, ras, decs) <= cradius + half_diag + 1.0
    with np.errstate(invalid="ignore"):
        # the same rounding as astropy.nddata.overlap_slices, so stamps match Cutout2D
        x0 = np.ceil(centre_x - widths / 2.0)
        y0 = np.ceil(centre_y - heights / 2.0)
    boxes: list[PixelBox | None] = []
    for k in range(len(regions)):
        if not valid[k]:
            boxes.append(None)
            continue
        left, bottom = int(x0[k]), int(y0[k])
        boxes.append(PixelBox(((left, left + int(widths[k])),
                               (bottom, bottom + int(heights[k])))))
    return boxes


def _boundary_box(mapper, region, x, y, cra, cdec, cradius) -> PixelBox | None:
    rra, rdec, rradius = _region_centre_radius(region)
    if float(angular_distance(cra, cdec, rra, rdec)) > cradius + rradius:
        return None
    good = np.isfinite(x) & np.isfinite(y)
    gx, gy, gra, gdec = mapper.grid
    inside = _inside(region, gra, gdec) if gra.size else np.zeros(0, bool)
    px = np.concatenate([x[good], gx[inside]])
    py = np.concatenate([y[good], gy[inside]])
    if px.size == 0:
        return None
    x0 = int(math.floor(px.min() + 0.5))
    x1 = int(math.floor(px.max() + 0.5)) + 1
    y0 = int(math.floor(py.min() + 0.5))
    y1 = int(math.floor(py.max() + 0.5)) + 1
    return PixelBox(((x0, x1), (y0, y1)))
