"""Aperture photometry of targets on stamps (``photutils``' exact pixel overlaps).

A circular aperture at the target's pixel position and a local background annulus around
it: the background is the sigma-clipped (3 sigma, 5 iterations) median of the annulus
pixels whose centres lie in it, taken off every aperture pixel. Aperture sums weigh each
pixel by its exact overlap with the circle (``photutils.geometry``). Errors come from the
archive's RMS (noise) product when there is one (``sqrt(sum w rms^2)`` over the aperture),
otherwise from the annulus' clipped standard deviation per pixel; both add the uncertainty
of the background level (``area * std / sqrt(n_annulus)``). This is what photutils'
``aperture_photometry`` and ``ApertureStats`` compute, done for many stamps and radii at
once (:func:`measure_windows`); :func:`measure` is the one-stamp form.

Flags (bits, OR-ed): 1 the aperture is not entirely on valid pixels (image edge, NaN,
BLANK); 2 fewer than ``MIN_BACKGROUND_PIXELS`` valid annulus pixels; 4 the error comes
from the background scatter (no RMS product); 8 nothing could be measured.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from vo_service.engine.stack import EpochStamp

FLAG_APERTURE_INCOMPLETE = 1
FLAG_FEW_BACKGROUND = 2
FLAG_ERROR_FROM_BACKGROUND = 4
FLAG_NO_MEASUREMENT = 8
FLAG_MEANINGS = {FLAG_APERTURE_INCOMPLETE: "aperture not entirely on valid pixels",
                 FLAG_FEW_BACKGROUND: "few valid background pixels",
                 FLAG_ERROR_FROM_BACKGROUND: "error from the background scatter (no RMS)",
                 FLAG_NO_MEASUREMENT: "no measurement"}
MIN_BACKGROUND_PIXELS = 10


@dataclass(frozen=True)
class ApertureSpec:
    """Aperture radius and background annulus radii, in arcsec on the sky."""

    radius: float = 1.0
    annulus_inner: float = 2.0
    annulus_outer: float = 3.0

    def __post_init__(self) -> None:
        values = (self.radius, self.annulus_inner, self.annulus_outer)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError("aperture and annulus radii must be positive numbers of arcsec")
        if not self.radius <= self.annulus_inner < self.annulus_outer:
            raise ValueError("the annulus must lie outside the aperture: radius <= inner "
                             f"< outer, got {self.radius:g}, {self.annulus_inner:g}, "
                             f"{self.annulus_outer:g} arcsec")


@dataclass(frozen=True)
class Measurement:
    """The flux of the target on one stamp (in the image's BUNIT; NaN when unmeasured)."""

    flux: float
    flux_err: float
    background: float  # per pixel, subtracted
    flags: int
    error_source: str  # 'rms', 'background' or ''
    unit: str = ""


NO_MEASUREMENT = Measurement(math.nan, math.nan, math.nan, FLAG_NO_MEASUREMENT, "")


def measure(values: np.ndarray, x: float, y: float, radius: float, annulus: tuple[float, float],
            rms: np.ndarray | None = None) -> Measurement:
    """Aperture photometry at 0-based pixel (x, y); radii in pixels."""
    half = window_half(annulus)
    windows = [_window(np.asarray(values, dtype=np.float64), x, y, half)]
    if rms is not None:
        windows.append(_window(np.asarray(rms, dtype=np.float64), x, y, half))
    x0, y0 = round(x) - half, round(y) - half
    found = measure_windows(windows[0][None], np.array([x - x0]), np.array([y - y0]),
                            (radius,), annulus, None if rms is None else windows[1][None])
    if found.flags[0] & FLAG_NO_MEASUREMENT:
        return NO_MEASUREMENT
    return Measurement(float(found.flux[0, 0]), float(found.flux_err[0, 0]),
                       float(found.background[0]), int(found.flags[0]),
                       "rms" if rms is not None else "background")


def window_half(annulus: tuple[float, float]) -> int:
    """Half side (pixels) of a window holding the annulus around any sub-pixel centre."""
    return int(math.ceil(annulus[1])) + 1


def _window(values: np.ndarray, x: float, y: float, half: int) -> np.ndarray:
    """The (2 half + 1)^2 pixels around (round(x), round(y)), NaN off the array."""
    side = 2 * half + 1
    window = np.full((side, side), np.nan)
    x0, y0 = round(x) - half, round(y) - half
    ny, nx = values.shape[-2:]
    xs, ys = slice(max(x0, 0), min(x0 + side, nx)), slice(max(y0, 0), min(y0 + side, ny))
    if xs.start < xs.stop and ys.start < ys.stop:
        window[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = values[ys, xs]
    return window


def _overlap(overlap_grid, x: float, y: float, radius: float, height: int,  # noqa: ANN001
             width: int) -> tuple[slice, slice, np.ndarray]:
    """Exact overlap of a circle with the pixels of its bounding box within a window:
    (row slice, column slice, weights). Pixels beyond the box have none."""
    x0, x1 = max(int(math.floor(x - radius - 0.5)), 0), min(int(math.ceil(x + radius + 1.5)),
                                                            width)
    y0, y1 = max(int(math.floor(y - radius - 0.5)), 0), min(int(math.ceil(y + radius + 1.5)),
                                                            height)
    weights = overlap_grid(x0 - 0.5 - x, x1 - 0.5 - x, y0 - 0.5 - y, y1 - 0.5 - y,
                           x1 - x0, y1 - y0, radius, 1, 1)
    return slice(y0, y1), slice(x0, x1), weights


@dataclass(frozen=True)
class WindowPhotometry:
    """Measurements of N targets at R radii (NaN where unmeasured)."""

    flux: np.ndarray  # (N, R), background subtracted
    flux_err: np.ndarray  # (N, R)
    background: np.ndarray  # (N,) per pixel
    flags: np.ndarray  # (N,) FLAG_* bits
    flag_bits: np.ndarray  # (N,) OR of the FLAG product's pixels in the largest aperture
    clipped: np.ndarray  # (N,) the largest aperture reaches pixels outside the window's data


def measure_windows(values: np.ndarray, cx: np.ndarray, cy: np.ndarray,
                    radii: tuple[float, ...] | list[float], annulus: tuple[float, float],
                    rms: np.ndarray | None = None, flag_pixels: np.ndarray | None = None,
                    outside: np.ndarray | None = None) -> WindowPhotometry:
    """Photometry of N targets, each at (cx, cy) (0-based pixels) of its own window.

    ``values`` (N, W, W): pixels in physical units, NaN where there are none (off the
    stamp or the image, BLANK); ``rms`` the same from the RMS product; ``flag_pixels``
    (integers) from the FLAG product; ``outside`` (bool) marks window pixels off the stamp
    (default: every NaN pixel): the aperture reaching one is ``clipped``. Radii in pixels;
    every pixel of the annulus must fit in the window (:func:`window_half`).
    """
    from astropy.stats import sigma_clip
    from photutils.geometry import circular_overlap_grid

    values = np.asarray(values, dtype=np.float64)
    count, height, width = values.shape
    radii = [float(r) for r in radii]
    inner, outer = float(annulus[0]), float(annulus[1])
    missing = ~np.isfinite(values)
    invalid = missing.copy()
    if rms is not None:
        rms = np.asarray(rms, dtype=np.float64)
        invalid |= ~np.isfinite(rms) | (rms < 0)
    valid = ~invalid
    data = np.where(valid, values, 0.0)
    variance = np.where(valid, rms, 0.0) ** 2 if rms is not None else None
    flux = np.full((count, len(radii)), np.nan)
    flux_err = np.full((count, len(radii)), np.nan)
    areas = np.zeros((count, len(radii)))
    sums = np.zeros((count, len(radii)))
    pixel_var = np.zeros((count, len(radii)))
    ring_weights = np.zeros((count, height, width))
    incomplete = np.zeros(count, dtype=bool)
    clipped = np.zeros(count, dtype=bool)
    flag_bits = np.zeros(count, dtype=np.int64)
    largest = int(np.argmax(radii))
    gone = missing if outside is None else outside
    for n in range(count):
        for k, radius in enumerate(radii):
            rows, columns, weights = _overlap(circular_overlap_grid, cx[n], cy[n], radius,
                                              height, width)
            areas[n, k] = float(np.sum(weights * valid[n, rows, columns]))
            sums[n, k] = float(np.sum(weights * data[n, rows, columns]))
            if variance is not None:
                pixel_var[n, k] = float(np.sum(weights * variance[n, rows, columns]))
            full = math.pi * radius * radius
            if areas[n, k] < full * (1 - 1e-6):
                incomplete[n] = True
            if k == largest:
                touched = weights > 0
                clipped[n] = bool(np.any(touched & gone[n, rows, columns]))
                if flag_pixels is not None:
                    flag_bits[n] = int(np.bitwise_or.reduce(np.where(
                        touched, flag_pixels[n, rows, columns], 0).astype(np.int64), axis=None))
        for radius, sign in ((outer, 1.0), (inner, -1.0)):
            rows, columns, weights = _overlap(circular_overlap_grid, cx[n], cy[n], radius,
                                              height, width)
            ring_weights[n, rows, columns] += sign * weights
    dy = np.arange(height)[None, :, None] - np.asarray(cy)[:, None, None]
    dx = np.arange(width)[None, None, :] - np.asarray(cx)[:, None, None]
    distance2 = dx * dx + dy * dy
    in_ring = (distance2 >= inner * inner) & (distance2 < outer * outer) & valid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped_ring = sigma_clip(np.ma.masked_array(values, ~in_ring), sigma=3.0,
                                  maxiters=5, axis=(1, 2))
        kept = clipped_ring.filled(np.nan).reshape(count, -1)
        background = np.nanmedian(kept, axis=1)  # partitions; a masked median sorts
        scatter = np.nanstd(kept, axis=1)
    # the annulus' exact area over its valid pixels that survived the clipping (what
    # photutils' ApertureStats.sum_aper_area is)
    rejected = in_ring & np.ma.getmaskarray(clipped_ring)
    ring_area = np.sum(ring_weights * (valid & ~rejected), axis=(1, 2))
    flags = np.where(incomplete, FLAG_APERTURE_INCOMPLETE, 0)
    ring_pixels = np.floor(ring_area).astype(np.int64)
    few = ~np.isfinite(background) | (ring_pixels < MIN_BACKGROUND_PIXELS)
    flags |= np.where(few, FLAG_FEW_BACKGROUND, 0)
    no_background = ~np.isfinite(background)
    background = np.where(no_background, 0.0, background)
    scatter = np.where(no_background, np.nan, scatter)
    ring_pixels = np.where(no_background, 0, ring_pixels)
    if rms is None:
        flags |= FLAG_ERROR_FROM_BACKGROUND
    with np.errstate(invalid="ignore", divide="ignore"):
        level_err = np.where((ring_pixels > 0)[:, None], areas * (scatter / np.sqrt(
            np.maximum(ring_pixels, 1)))[:, None], np.nan)
        pixel_err = (np.sqrt(pixel_var) if rms is not None
                     else np.sqrt(areas) * scatter[:, None])
        total_err = np.where(np.isfinite(level_err), np.hypot(pixel_err, level_err), pixel_err)
    measured = areas > 0
    flux = np.where(measured, sums - background[:, None] * areas, np.nan)
    flux_err = np.where(measured, total_err, np.nan)
    nothing = ~measured.any(axis=1)
    flags = np.where(nothing, FLAG_NO_MEASUREMENT, flags)
    background = np.where(nothing, np.nan, background)
    return WindowPhotometry(flux, flux_err, background, flags.astype(np.int64), flag_bits,
                            clipped)


def pixel_scale_arcsec(header: fits.Header) -> float:
    """Mean pixel scale (arcsec) of a stamp's celestial WCS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def measure_stamp(stamp: EpochStamp, spec: ApertureSpec,
                  rms: np.ndarray | None = None) -> Measurement:
    """Photometry of the target on one epoch's stamp; ``rms``: the RMS product's pixels
    of the same box (None: errors from the background)."""
    if not stamp.has_stamp or stamp.target_pixel is None:
        return NO_MEASUREMENT
    assert stamp.result is not None
    values = stamp.result.physical()
    assert values is not None
    values = values.reshape(values.shape[-2:])
    header = fits.Header.fromstring(stamp.result.header_bytes().decode("ascii"))
    scale = pixel_scale_arcsec(header)
    x, y = stamp.target_pixel[0] - 1.0, stamp.target_pixel[1] - 1.0
    if rms is not None and rms.shape[-2:] != values.shape:
        rms = None
    found = measure(values, x, y, spec.radius / scale,
                    (spec.annulus_inner / scale, spec.annulus_outer / scale),
                    None if rms is None else rms.reshape(values.shape))
    return Measurement(found.flux, found.flux_err, found.background, found.flags,
                       found.error_source, str(header.get("BUNIT", "")).strip())
