"""Aperture photometry of a target on each epoch's stamp (``photutils``).

A circular aperture at the target's pixel position and a local background annulus around
it: the background is the sigma-clipped (3 sigma) median of the annulus pixels, taken off
every aperture pixel. Errors come from the archive's RMS (noise) product when there is one
(``sqrt(sum rms^2)`` over the aperture), otherwise from the annulus' clipped standard
deviation per pixel; both add the uncertainty of the background level
(``area * std / sqrt(n_annulus)``).

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
from astropy.stats import SigmaClip
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
    from photutils.aperture import (
        ApertureStats,
        CircularAnnulus,
        CircularAperture,
        aperture_photometry,
    )

    values = np.asarray(values, dtype=np.float64)
    invalid = ~np.isfinite(values)
    if rms is not None:
        rms = np.asarray(rms, dtype=np.float64)
        invalid |= ~np.isfinite(rms) | (rms < 0)
    aperture = CircularAperture((x, y), radius)
    ring = CircularAnnulus((x, y), *annulus)
    flags = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full_area = aperture.area
        used_area = float(aperture.area_overlap(values, mask=invalid))
        if used_area < full_area * (1 - 1e-6):
            flags |= FLAG_APERTURE_INCOMPLETE
        if used_area <= 0:
            return NO_MEASUREMENT
        stats = ApertureStats(values, ring, mask=invalid, sigma_clip=SigmaClip(3.0))
        background = float(stats.median)
        scatter = float(stats.std)
        count = int(stats.sum_aper_area.value) if stats.sum_aper_area is not None else 0
        if not math.isfinite(background) or count < MIN_BACKGROUND_PIXELS:
            flags |= FLAG_FEW_BACKGROUND
        if not math.isfinite(background):
            background, scatter, count = 0.0, math.nan, 0
        table = aperture_photometry(np.where(invalid, 0.0, values), aperture, mask=invalid,
                                    error=None if rms is None else np.where(invalid, 0.0, rms))
    total = float(table["aperture_sum"][0])
    flux = total - background * used_area
    level_err = used_area * scatter / math.sqrt(count) if count else math.nan
    if rms is not None:
        source = "rms"
        pixel_err = float(table["aperture_sum_err"][0])
    else:
        source = "background"
        flags |= FLAG_ERROR_FROM_BACKGROUND
        pixel_err = math.sqrt(used_area) * scatter
    flux_err = math.hypot(pixel_err, level_err) if math.isfinite(level_err) else pixel_err
    return Measurement(flux, flux_err, background, flags, source)


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
