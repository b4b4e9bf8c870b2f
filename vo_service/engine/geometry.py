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

from vo_service.engine.sky_regions import (
    angular_distance,
    circle_boundary,
    inside,
    polygon_boundary,
    range_boundary,
    region_centre_radius,
    to_radec,
    unit_vectors,
)
from vo_service.shapes import ANGLE_UNITS_DEG, CenterSize, Circle, Polygon, Range, Shape

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
        centre = unit_vectors(ra, dec).sum(axis=0)
        if np.linalg.norm(centre) < 1e-9:
            return 0.0, 0.0, 180.0
        cra, cdec = to_radec(centre / np.linalg.norm(centre))
        radius = float(np.max(angular_distance(cra, cdec, ra, dec)))
        # a coarse grid can miss the far edges of a strongly curved image
        step = radius / GRID_STEPS
        return float(cra), float(cdec), min(180.0, radius + 2 * step)


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
        ra, dec = circle_boundary(region)
        return np.append(ra, region.ra), np.append(dec, region.dec)
    if isinstance(region, Polygon):
        return polygon_boundary(region)
    if isinstance(region, Range):
        return range_boundary(region)
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
    rra, rdec, rradius = region_centre_radius(region)
    if float(angular_distance(cra, cdec, rra, rdec)) > cradius + rradius:
        return None
    good = np.isfinite(x) & np.isfinite(y)
    gx, gy, gra, gdec = mapper.grid
    within = inside(region, gra, gdec) if gra.size else np.zeros(0, bool)
    px = np.concatenate([x[good], gx[within]])
    py = np.concatenate([y[good], gy[within]])
    if px.size == 0:
        return None
    x0 = int(math.floor(px.min() + 0.5))
    x1 = int(math.floor(px.max() + 0.5)) + 1
    y0 = int(math.floor(py.min() + 0.5))
    y1 = int(math.floor(py.max() + 0.5)) + 1
    return PixelBox(((x0, x1), (y0, y1)))
