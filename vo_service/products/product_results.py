"""One PSF or catalog product made for one target, shaped like an engine cutout result, so
that a catalog job stores, publishes and bundles it exactly as it does image stamps."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vo_service.engine import sphere
from vo_service.engine.cutout import StampStatus
from vo_service.engine.geometry import PixelBox
from vo_service.shapes import Circle, Polygon, Range, Shape


@dataclass
class ProductResult:
    """What a target got: status (ok, partial, no-overlap, error), a message, the FITS
    bytes (None without a product), the pixels for a PNG preview (PSFs only) and the
    pixel box (in the PSF grid image, or the stamp's box on the matching image)."""

    index: int
    status: StampStatus
    message: str = ""
    content: bytes | None = None
    pixels: np.ndarray | None = None
    pixel_box: PixelBox | None = None
    reason: str | None = None  # as `CutoutResult.reason` (a product has no filters)

    def __post_init__(self) -> None:
        self.status = StampStatus(self.status)  # the engine's words: ok, partial, ...

    @property
    def has_stamp(self) -> bool:
        """Whether there is a product to store."""
        return self.content is not None

    def fits_bytes(self) -> bytes:
        """The product as FITS bytes."""
        assert self.content is not None
        return self.content

    def physical(self) -> np.ndarray:
        """Pixels to preview; a catalog has none (ValueError, as for an empty stamp)."""
        if self.pixels is None:
            raise ValueError("a catalog product has no picture")
        return self.pixels


def region_centre(region: Shape) -> tuple[float, float]:
    """The target a region stands for: a circle's or box's centre, a polygon's mean
    direction, a range's middle (RA through 0 when it wraps)."""
    if isinstance(region, Polygon):
        xyz = sphere.radec_to_xyz(*np.array(region.vertices).T)
        ra, dec = sphere.xyz_to_radec(sphere.normalise(xyz.mean(axis=0)))
        return float(ra), float(dec)
    if isinstance(region, Range):
        ra_lo, span, dec_lo, dec_hi, _ = sphere.range_limits(region)
        return (ra_lo + span / 2.0) % 360.0, (dec_lo + dec_hi) / 2.0
    return float(region.ra), float(region.dec)  # Circle, CenterSize


def region_radius_deg(region: Shape) -> float:
    """The radius of a circle region (deg); other shapes have a stamp box instead."""
    return float(region.radius) if isinstance(region, Circle) else math.nan
