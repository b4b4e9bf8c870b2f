"""Sky footprints of image HDUs from their WCS: edge polygons in ICRS, and WCS containment.

The polygon follows the outer edge of the pixel grid (pixel edges, not centres), sampled at
several points per side so that distortions (SIP, lookup tables, plate solutions) and curved
projections are followed. Images that no polygon smaller than a hemisphere can describe
(whole-sky maps, edges outside the projection's domain) are "wide": their containment test
is done by the WCS itself (world -> pixel, then a bounds check).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import wcs_to_celestial_frame
from numpy.typing import ArrayLike, NDArray

from vo_service.engine import sphere

SAMPLES_PER_EDGE = 16
# Beyond this radius a polygon is no longer a safe description (the gnomonic containment
# test needs every vertex well inside the hemisphere around the centre).
MAX_POLYGON_RADIUS_DEG = 70.0
# Edge samples closer than this (pixels) to the great circle of their neighbours are dropped:
# undistorted TAN images keep their 4 corners, curved edges keep what they need.
SIMPLIFY_PIXELS = 0.01


@dataclass(frozen=True)
class CelestialImage:
    """The 2-D celestial WCS of an HDU and the pixel dimensions along its two axes."""

    wcs: WCS
    nx: int
    ny: int

    def pixel_to_icrs(
        self, x: ArrayLike, y: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """ICRS (ra, dec) degrees of 0-based pixel positions (NaN outside the projection)."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            world = self.wcs.all_pix2world(x, y, 0)
        lon, lat = world[self.wcs.wcs.lng], world[self.wcs.wcs.lat]
        frame = wcs_to_celestial_frame(self.wcs)
        if frame.name == "icrs":
            return np.asarray(lon, dtype=float) % 360.0, np.asarray(lat, dtype=float)
        good = np.isfinite(lon) & np.isfinite(lat)
        ra = np.full(lon.shape, np.nan)
        dec = np.full(lat.shape, np.nan)
        if good.any():
            icrs = SkyCoord(lon[good] * u.deg, lat[good] * u.deg, frame=frame).icrs
            ra[good], dec[good] = icrs.ra.deg, icrs.dec.deg
        return ra, dec

    def icrs_to_pixel(
        self, ra: ArrayLike, dec: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """0-based pixel (x, y) of ICRS positions (NaN where the projection has no answer)."""
        frame = wcs_to_celestial_frame(self.wcs)
        coords = SkyCoord(np.asarray(ra, dtype=float) * u.deg,
                          np.asarray(dec, dtype=float) * u.deg, frame="icrs")
        native = coords.transform_to(frame).spherical
        lon, lat = native.lon.deg, native.lat.deg
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.wcs.has_distortion:
                x, y = self.wcs.all_world2pix(lon, lat, 0, quiet=True)
            else:
                x, y = self.wcs.wcs_world2pix(lon, lat, 0)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def contains(self, ra: ArrayLike, dec: ArrayLike) -> NDArray[np.bool_]:
        """Which ICRS positions fall on the pixel grid (edges included)."""
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        x, y = self.icrs_to_pixel(ra, dec)
        inside = (x >= -0.5) & (x <= self.nx - 0.5) & (y >= -0.5) & (y <= self.ny - 0.5)
        if inside.any():
            # Round trip: some projections (AIT, SIN) map points of the far side onto the grid.
            back_ra, back_dec = self.pixel_to_icrs(x[inside], y[inside])
            pts = sphere.radec_to_xyz(ra[inside], dec[inside])
            back = sphere.radec_to_xyz(back_ra, back_dec)
            ok = np.sum(pts * back, axis=-1) > np.cos(np.radians(1.0 / 60.0))
            inside[inside] = ok
        return inside


@dataclass(frozen=True)
class Footprint:
    """Where an image lies: ICRS polygon (None when wide), centre, radius, pixel scale."""

    vertices: tuple[tuple[float, float], ...] | None
    centre_ra: float
    centre_dec: float
    radius_deg: float
    pixel_scale_arcsec: float | None
    wide: bool


def celestial_image(hdu: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU,
                    hdul: fits.HDUList | None = None) -> CelestialImage | None:
    """The celestial WCS of an image HDU, or None when it has none.

    ``hdul`` is passed to astropy so lookup-table distortions (CPDIS/D2IM) are read. Extra
    (spectral, Stokes, degenerate) axes are dropped; a purely 2-D WCS is kept whole so its
    distortions survive.
    """
    header = hdu.header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        full = WCS(header, hdul, relax=True)
    if not full.has_celestial:
        return None
    lng, lat = full.wcs.lng, full.wcs.lat
    wcs = full if full.naxis == 2 else full.celestial
    axes = sorted((lng, lat))
    dims = [int(header.get(f"NAXIS{axis + 1}", 0) or 0) for axis in axes]
    if min(dims) < 1:
        return None
    return CelestialImage(wcs=wcs, nx=dims[0], ny=dims[1])


def edge_pixels(nx: int, ny: int, samples: int = SAMPLES_PER_EDGE) -> NDArray[np.float64]:
    """Pixel (x, y) points around the outer pixel edges, ``samples`` per side, one loop."""
    t = np.arange(samples) / samples
    x0, x1, y0, y1 = -0.5, nx - 0.5, -0.5, ny - 0.5
    bottom = np.stack([x0 + t * (x1 - x0), np.full(samples, y0)], axis=1)
    right = np.stack([np.full(samples, x1), y0 + t * (y1 - y0)], axis=1)
    top = np.stack([x1 - t * (x1 - x0), np.full(samples, y1)], axis=1)
    left = np.stack([np.full(samples, x0), y1 - t * (y1 - y0)], axis=1)
    return np.concatenate([bottom, right, top, left])


def image_footprint(image: CelestialImage, samples: int = SAMPLES_PER_EDGE) -> Footprint:
    """The ICRS footprint polygon (counter-clockwise), centre, radius and pixel scale."""
    cx, cy = (image.nx - 1) / 2.0, (image.ny - 1) / 2.0
    (c_ra, c_dec) = (float(v[0]) for v in image.pixel_to_icrs([cx], [cy]))
    if not np.isfinite(c_ra) or not np.isfinite(c_dec):
        raise ValueError("the WCS gives no sky position for the central pixel")
    centre = sphere.radec_to_xyz(c_ra, c_dec)

    scale_ra, scale_dec = image.pixel_to_icrs([cx, cx + 1, cx], [cy, cy, cy + 1])
    steps = sphere.angle_deg(sphere.radec_to_xyz(scale_ra[1:], scale_dec[1:]), centre)
    scale = float(np.mean(steps)) * 3600.0 if np.all(np.isfinite(steps)) else None

    edge = edge_pixels(image.nx, image.ny, samples)
    ra, dec = image.pixel_to_icrs(edge[:, 0], edge[:, 1])
    finite = np.isfinite(ra) & np.isfinite(dec)
    if finite.all():
        vertices = sphere.radec_to_xyz(ra, dec)
        radius = float(sphere.angle_deg(vertices, centre).max())
        if radius <= MAX_POLYGON_RADIUS_DEG:
            tolerance = (scale or 1.0) / 3600.0 * SIMPLIFY_PIXELS
            vertices = sphere.counter_clockwise(_simplify(vertices, tolerance, samples))
            v_ra, v_dec = sphere.xyz_to_radec(vertices)
            polygon = tuple((float(a), float(b)) for a, b in zip(v_ra, v_dec, strict=True))
            return Footprint(polygon, c_ra, c_dec, radius, scale, wide=False)
    return Footprint(None, c_ra, c_dec, _wide_radius(image, centre), scale, wide=True)


def _drop_repeats(vertices: NDArray[np.float64]) -> NDArray[np.float64]:
    """Remove consecutive duplicate vertices (a degenerate edge collapses in the WCS)."""
    following = np.roll(vertices, -1, axis=0)
    keep = np.sum(vertices * following, axis=-1) < 1.0 - 1e-15
    return vertices[keep] if keep.sum() >= 3 else vertices


def _simplify(vertices: NDArray[np.float64], tolerance_deg: float,
              samples: int) -> NDArray[np.float64]:
    """Drop edge samples lying within ``tolerance_deg`` of the arc joining kept neighbours.

    ``vertices`` are the edge samples in pixel order (corners at multiples of ``samples``).
    """
    limit = np.sin(np.radians(tolerance_deg))
    corners = vertices[::samples]
    if len(vertices) == 4 * samples and len(corners) == 4:
        # Common case first (no distortion, straight sides): are all samples on the sides?
        normals = np.cross(corners, np.roll(corners, -1, axis=0))
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        if np.all(lengths > 1e-15):
            side = np.arange(len(vertices)) // samples
            offsets = np.abs(np.sum(vertices * (normals / lengths)[side], axis=1))
            if np.all(offsets <= limit):
                return corners
    vertices = _drop_repeats(vertices)
    count = len(vertices)
    kept = [0]
    for index in range(1, count):
        anchor = vertices[kept[-1]]
        following = vertices[(index + 1) % count]
        normal = np.cross(anchor, following)
        norm = np.linalg.norm(normal)
        between = vertices[kept[-1] + 1: index + 1]
        if norm < 1e-15 or np.any(np.abs(between @ (normal / norm)) > limit):
            kept.append(index)
    return vertices[kept] if len(kept) >= 3 else vertices


def _wide_radius(image: CelestialImage, centre: NDArray[np.float64]) -> float:
    """Largest distance from the centre to a sampled pixel of a wide image (<= 180 deg)."""
    gx, gy = np.meshgrid(np.linspace(-0.5, image.nx - 0.5, 33),
                         np.linspace(-0.5, image.ny - 0.5, 33))
    ra, dec = image.pixel_to_icrs(gx.ravel(), gy.ravel())
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        return 180.0
    return float(sphere.angle_deg(sphere.radec_to_xyz(ra[good], dec[good]), centre).max())


@lru_cache(maxsize=64)
def _cached_image(path: str, hdu: int, mtime: float) -> CelestialImage | None:
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        return celestial_image(hdul[hdu], hdul)


def load_celestial_image(path: Path | str, hdu: int, mtime: float = 0.0) -> CelestialImage | None:
    """The celestial WCS of ``path[hdu]`` (cached per path, HDU and modification time)."""
    return _cached_image(str(path), int(hdu), float(mtime))
