"""Sky regions to pixel boxes: ICRS positions into any image frame and projection.

All world->pixel conversions for a batch of regions go through ONE vectorized call
(`SkyToPixel.pixels`), with distortions (SIP, lookup tables, DSS plate solutions)
applied by `all_world2pix`. A region other than a centre+size box gets the bounding box
of its part inside the image: of its boundary samples that fall inside the image (the
boundary is sampled about every half pixel where it passes near the image) united with
the image-edge samples that fall inside the region. So a region containing the whole
image, a pole or an edge gives the right box, and boundary points far off the image
(which project to wild pixel positions) never widen it.
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

from vo_service.engine.sky_regions import boundary_near, inside, region_centre_radius
from vo_service.engine.sphere import angular_distance, radec_to_xyz, xyz_to_radec
from vo_service.shapes import ANGLE_UNITS_DEG, CenterSize, Circle, Polygon, Range, Shape

GRID_STEPS = 32
EDGE_POINTS = 1024  # at most, per image edge
TRUSTED_REACH = 3.0  # a whole region projects sanely within this many footprint radii
ANGLE_STEP_DEG = 1e-4  # finite-difference step for the local pixel scale
# Convergence of the distortion inverse (all_world2pix), in pixels. astropy's default,
# 1e-4, stops when the slowest position of a call has converged, so a position's pixel
# depended on the positions converted with it by up to ~5e-8 px: a target that close to a
# pixel edge got a box one pixel apart in one unit of work and another. At 1e-10 each
# position is converged to rounding, whatever else is converted with it (+0.07 us each).
WORLD_TO_PIXEL_TOLERANCE = 1e-10


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
        """Pixels in the box (math.prod: np.prod costs 3 us a call, once per stamp)."""
        return math.prod(stop - start for start, stop in self.ranges)

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
        if not extra and len(self.ranges) == 2:  # a 2-D image: this very box (immutable)
            return self
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
            pix = self.celestial.all_world2pix(world, 0, quiet=True,
                                               tolerance=WORLD_TO_PIXEL_TOLERANCE)
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
        return self._to_icrs(gx.ravel(), gy.ravel())

    def _to_icrs(self, x: np.ndarray, y: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, ra, dec) of pixel positions that have a sky position."""
        world = self.celestial.all_pix2world(np.column_stack([x, y]), 0)
        lon, lat = (world[:, 0], world[:, 1]) if self._lng_first else (world[:, 1], world[:, 0])
        good = np.isfinite(lon) & np.isfinite(lat)
        x, y, lon, lat = x[good], y[good], lon[good], lat[good]
        if isinstance(self.frame, ICRS) or lon.size == 0:
            return x, y, lon, lat
        icrs = SkyCoord(lon, lat, unit="deg", frame=self.frame).icrs
        return x, y, icrs.ra.deg, icrs.dec.deg

    @cached_property
    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sample points (pixel x, y; ICRS ra, dec) along the border of the image's sky
        area: the image edges, corners included, about one per pixel (at most
        EDGE_POINTS per edge), plus the rim of the valid area of an all-sky projection."""
        nx, ny = self.fits_shape[:2]
        inset = 1e-6
        xs = np.linspace(-0.5 + inset, nx - 0.5 - inset, min(nx, EDGE_POINTS) + 1)
        ys = np.linspace(-0.5 + inset, ny - 0.5 - inset, min(ny, EDGE_POINTS) + 1)
        x = np.concatenate([xs, xs, np.full(ys.size, xs[0]), np.full(ys.size, xs[-1])])
        y = np.concatenate([np.full(xs.size, ys[0]), np.full(xs.size, ys[-1]), ys, ys])
        if self.has_rim:
            rim_x, rim_y = self._rim()
            x, y = np.concatenate([x, rim_x]), np.concatenate([y, rim_y])
        return self._to_icrs(x, y)

    @property
    def has_rim(self) -> bool:
        """Some pixels have no sky position (e.g. outside the ellipse of an Aitoff map)."""
        return self.grid[0].size < (GRID_STEPS + 1) ** 2

    def _rim(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixels with a sky position next to pixels without one (on a grid of at most
        EDGE_POINTS per side)."""
        nx, ny = self.fits_shape[:2]
        xs = np.linspace(0, nx - 1, min(nx, EDGE_POINTS))
        ys = np.linspace(0, ny - 1, min(ny, EDGE_POINTS))
        gx, gy = np.meshgrid(xs, ys)
        with np.errstate(invalid="ignore"):
            world = self.celestial.all_pix2world(np.column_stack([gx.ravel(), gy.ravel()]), 0)
        valid = np.pad(np.isfinite(world).all(axis=1).reshape(gx.shape), 1)
        core = valid[1:-1, 1:-1]
        rim = core & ~(valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:])
        return gx[rim], gy[rim]

    @cached_property
    def pixel_scale(self) -> float:
        """The smallest angular side of a pixel over the image (degrees), from the grid."""
        nx, ny = self.fits_shape[:2]
        steps = GRID_STEPS + 1
        xs = np.linspace(-0.5, nx - 0.5, steps)
        ys = np.linspace(-0.5, ny - 0.5, steps)
        gx, gy = np.meshgrid(xs, ys)
        world = self.celestial.all_pix2world(np.column_stack([gx.ravel(), gy.ravel()]), 0)
        lon = world[:, 0].reshape(steps, steps)
        lat = world[:, 1].reshape(steps, steps)
        if not self._lng_first:
            lon, lat = lat, lon
        along_x = angular_distance(lon[:, :-1], lat[:, :-1], lon[:, 1:], lat[:, 1:])
        along_y = angular_distance(lon[:-1, :], lat[:-1, :], lon[1:, :], lat[1:, :])
        scales = np.concatenate([(along_x / (xs[1] - xs[0])).ravel(),
                                 (along_y / (ys[1] - ys[0])).ravel()])
        scales = scales[np.isfinite(scales) & (scales > 0)]
        return float(scales.min()) if scales.size else 1.0 / 3600

    @cached_property
    def footprint(self) -> tuple[float, float, float]:
        """(ra, dec, radius) in degrees of a circle containing the image."""
        gx, gy, ra, dec = self.grid
        if ra.size == 0:
            return 0.0, 0.0, 180.0
        centre = radec_to_xyz(ra, dec).sum(axis=0)
        if np.linalg.norm(centre) < 1e-9:
            return 0.0, 0.0, 180.0
        cra, cdec = xyz_to_radec(centre / np.linalg.norm(centre))
        radius = float(np.max(angular_distance(cra, cdec, ra, dec)))
        # a coarse grid can miss the far edges of a strongly curved image
        step = radius / GRID_STEPS
        return float(cra), float(cdec), min(180.0, radius + 2 * step)


@dataclass(frozen=True)
class RegionWindow:
    """Where a region falls on an image (FITS axes 1, 2).

    `inside`: the box of the part of the region inside the image (clipped).
    `requested`: the box of the whole region, unclipped (what padding fills); the
    `inside` box when the region does not project as a whole (e.g. all RA, or far off).
    `complete`: the region lies entirely inside the image.
    """

    requested: PixelBox
    inside: PixelBox
    complete: bool


def region_windows(mapper: SkyToPixel, regions: Sequence[Shape]) -> list[RegionWindow | None]:
    """The window of every region on the image; None where the region misses it.

    All sample points of all regions are converted in one vectorized world->pixel call.
    """
    centre_sizes = [i for i, region in enumerate(regions) if isinstance(region, CenterSize)]
    others = [i for i, region in enumerate(regions) if not isinstance(region, CenterSize)]
    centred = _CentreSamples([regions[i] for i in centre_sizes])
    samples = [_samples(regions[i], mapper) for i in others]
    all_x, all_y = mapper.pixels(np.concatenate([centred.ra, *(ra for ra, _ in samples)]),
                                 np.concatenate([centred.dec, *(dec for _, dec in samples)]))
    windows: list[RegionWindow | None] = [None] * len(regions)
    split = len(centred.ra)
    for i, window in zip(centre_sizes, _center_size_windows(
            mapper, centred, all_x[:split], all_y[:split]), strict=True):
        windows[i] = window
    if others:
        ends = np.cumsum([len(ra) for ra, _ in samples])[:-1]
        for i, (ra, dec), x, y in zip(others, samples, np.split(all_x[split:], ends),
                                      np.split(all_y[split:], ends), strict=True):
            windows[i] = _boundary_window(mapper, regions[i], ra, dec, x, y)
    return windows


def region_boxes(mapper: SkyToPixel, regions: Sequence[Shape]) -> list[PixelBox | None]:
    """Spatial pixel box (axes 1, 2; unclipped) of every region; None where it misses
    the image (the `requested` box of `region_windows`)."""
    return [window.requested if window else None
            for window in region_windows(mapper, regions)]


def _samples(region: Shape, mapper: SkyToPixel) -> tuple[np.ndarray, np.ndarray]:
    """Boundary samples of a Circle, Polygon or Range near the image (ICRS degrees)."""
    if not isinstance(region, Circle | Polygon | Range):
        raise TypeError(f"unsupported region {region!r}")
    cra, cdec, cradius = mapper.footprint
    rra, rdec, rradius = region_centre_radius(region)
    if float(angular_distance(cra, cdec, rra, rdec)) > cradius + rradius:
        return np.empty(0), np.empty(0)  # misses the image: nothing to project
    ra, dec = boundary_near(region, (cra, cdec), cradius, mapper.pixel_scale / 2)
    if isinstance(region, Circle):
        return np.append(ra, region.ra), np.append(dec, region.dec)
    return ra, dec


def _pixels_per_degree_along_axes(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pixels per degree of sky along pixel axes 1 and 2 at a target.

    ``x, y`` are the pixel positions of the target and of small steps north and east of it
    (see `_samples`): the columns of the local sky->pixel Jacobian J. The sky length of one
    pixel step along an axis is the norm of the matching column of J^-1 (what
    ``proj_plane_pixel_scales`` gives at the reference point, but here at the target, so
    distortion and rectangular or skewed pixels are accounted for); its inverse is the
    number of pixels a degree spans along that axis. The signs of the steps do not matter.
    """
    dx_north, dy_north = (x[1] - x[0]) / ANGLE_STEP_DEG, (y[1] - y[0]) / ANGLE_STEP_DEG
    dx_east, dy_east = (x[2] - x[0]) / ANGLE_STEP_DEG, (y[2] - y[0]) / ANGLE_STEP_DEG
    determinant = abs(dx_north * dy_east - dy_north * dx_east)
    # J^-1 = adj(J) / det: column 1 is (dy_east, -dy_north) / det, column 2 (-dx_east,
    # dx_north) / det, so one pixel step along x spans hypot(dy_north, dy_east) / det deg.
    step_x, step_y = math.hypot(dy_north, dy_east), math.hypot(dx_north, dx_east)
    if determinant == 0 or step_x == 0 or step_y == 0:
        return math.nan, math.nan
    return determinant / step_x, determinant / step_y


class _CentreSamples:
    """The sample points of centre+size regions, each region's in a row: its centre, then
    for an angular size a small step north and east of it (for the local pixel scale)."""

    def __init__(self, regions: list[CenterSize]) -> None:
        self.regions = regions
        count = len(regions)
        self.centre_ra = np.fromiter((region.ra for region in regions), float, count)
        self.centre_dec = np.fromiter((region.dec for region in regions), float, count)
        self.angular = [k for k, region in enumerate(regions) if region.unit != "pix"]
        per_region = np.ones(count, dtype=np.int64)
        per_region[self.angular] = 3
        self.first = np.cumsum(per_region) - per_region  # each region's centre sample
        self.ra = np.empty(int(per_region.sum()))
        self.dec = np.empty_like(self.ra)
        self.ra[self.first], self.dec[self.first] = self.centre_ra, self.centre_dec
        for k in self.angular:
            region, steps = regions[k], slice(self.first[k] + 1, self.first[k] + 3)
            dec_step = ANGLE_STEP_DEG if region.dec < 89.0 else -ANGLE_STEP_DEG
            ra_step = ANGLE_STEP_DEG / max(math.cos(math.radians(region.dec)), 1e-6)
            self.ra[steps] = region.ra, (region.ra + ra_step) % 360.0
            self.dec[steps] = region.dec + dec_step, region.dec


def _center_size_windows(mapper: SkyToPixel, samples: _CentreSamples, all_x: np.ndarray,
                         all_y: np.ndarray) -> list[RegionWindow | None]:
    """Windows of centre+size regions from their samples' pixel positions, vectorized over
    the regions: boxes, and their parts inside the image, computed as arrays (a catalog
    job plans tens of thousands)."""
    regions, first = samples.regions, samples.first
    count = len(regions)
    widths = np.fromiter((region.width for region in regions), float, count)
    heights = np.fromiter((region.height for region in regions), float, count)
    centre_x, centre_y = all_x[first], all_y[first]
    valid = np.isfinite(centre_x) & np.isfinite(centre_y)
    half_diag = np.zeros(count)
    for k in samples.angular:
        region = regions[k]
        x, y = all_x[first[k]: first[k] + 3], all_y[first[k]: first[k] + 3]
        if not np.all(np.isfinite(x) & np.isfinite(y)):
            valid[k] = False
            continue
        per_deg_x, per_deg_y = _pixels_per_degree_along_axes(x, y)
        if not (math.isfinite(per_deg_x) and math.isfinite(per_deg_y)):
            valid[k] = False  # a singular WCS at the target: no pixel scale there
            continue
        to_deg = ANGLE_UNITS_DEG[region.unit]
        widths[k] *= to_deg * per_deg_x
        heights[k] *= to_deg * per_deg_y
        half_diag[k] = math.hypot(region.width, region.height) * to_deg / 2
    widths = np.maximum(np.round(widths), 1).astype(np.int64)
    heights = np.maximum(np.round(heights), 1).astype(np.int64)
    cra, cdec, cradius = mapper.footprint
    # the far side of the sky can project back onto the image (e.g. TAN): check distance
    valid &= angular_distance(cra, cdec, samples.centre_ra, samples.centre_dec
                              ) <= cradius + half_diag + 1.0
    with np.errstate(invalid="ignore"):
        # the same rounding as astropy.nddata.overlap_slices, so stamps match Cutout2D
        left = np.ceil(centre_x - widths / 2.0)
        bottom = np.ceil(centre_y - heights / 2.0)
    left = np.where(valid, left, 0).astype(np.int64)
    bottom = np.where(valid, bottom, 0).astype(np.int64)
    right, top = left + widths, bottom + heights
    nx, ny = mapper.fits_shape[:2]
    inside_left, inside_right = np.maximum(left, 0), np.minimum(right, nx)
    inside_bottom, inside_top = np.maximum(bottom, 0), np.minimum(top, ny)
    valid &= (inside_left < inside_right) & (inside_bottom < inside_top)
    windows: list[RegionWindow | None] = [None] * count
    edges = np.column_stack([left, right, bottom, top, inside_left, inside_right,
                             inside_bottom, inside_top])[valid].tolist()
    for k, (x0, x1, y0, y1, in_x0, in_x1, in_y0, in_y1) in zip(
            np.flatnonzero(valid).tolist(), edges, strict=True):
        requested = PixelBox(((x0, x1), (y0, y1)))
        complete = (in_x0, in_x1, in_y0, in_y1) == (x0, x1, y0, y1)
        windows[k] = RegionWindow(
            requested, requested if complete else PixelBox(((in_x0, in_x1), (in_y0, in_y1))),
            complete)
    return windows


def _boundary_window(mapper: SkyToPixel, region: Shape, ra: np.ndarray, dec: np.ndarray,
                     x: np.ndarray, y: np.ndarray) -> RegionWindow | None:
    """Window of a Circle, Polygon or Range from its boundary samples (ra, dec -> x, y):
    the part inside the image is bounded by the boundary samples inside the image and
    the image-edge samples inside the region."""
    if ra.size == 0:
        return None
    nx, ny = mapper.fits_shape[:2]
    cra, cdec, cradius = mapper.footprint
    centre = radec_to_xyz(np.array(cra), np.array(cdec))
    distance = np.degrees(np.arccos(np.clip(radec_to_xyz(ra, dec) @ centre, -1.0, 1.0)))
    valid = np.isfinite(x) & np.isfinite(y)
    with np.errstate(invalid="ignore"):
        on_image = (valid & (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
                    & (distance <= cradius))  # the far side can project onto the image
    ex, ey, era, edec = mapper.edges
    # a boundary inside an image without a rim holds the whole region inside it
    whole = bool(on_image.all()) and not mapper.has_rim
    edge_inside = np.zeros(era.size, bool) if whole else inside(region, era, edec)
    px = np.concatenate([x[on_image], ex[edge_inside]])
    py = np.concatenate([y[on_image], ey[edge_inside]])
    if px.size == 0:
        return None
    inner = _pixel_box(px, py).clip((nx, ny))
    if inner is None:
        return None
    complete = bool(on_image.all()) and not edge_inside.any()
    requested = inner
    if valid.all() and float(distance.max()) <= TRUSTED_REACH * cradius:
        requested = _pixel_box(np.append(x, px), np.append(y, py))
    return RegionWindow(requested, inner, complete)


def _pixel_box(px: np.ndarray, py: np.ndarray) -> PixelBox:
    """The pixels (centres at integers) covering positions px, py."""
    x0 = int(math.floor(px.min() + 0.5))
    x1 = int(math.floor(px.max() + 0.5)) + 1
    y0 = int(math.floor(py.min() + 0.5))
    y1 = int(math.floor(py.max() + 0.5)) + 1
    return PixelBox(((x0, x1), (y0, y1)))
