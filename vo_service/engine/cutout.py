"""One cutout: `cut(path, hdu, region, ...) -> CutoutResult`, and what a result holds.

A result keeps the raw source pixels (big-endian, unscaled: BSCALE/BZERO/BLANK copied),
the pixel box and a header template; its FITS bytes, astropy HDU and HDUList are made on
demand, so batches never build astropy objects per stamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits

from vo_service.engine.geometry import PixelBox, region_windows
from vo_service.engine.physical import physical_values
from vo_service.engine.reading import OpenImage
from vo_service.engine.spectral import CutoutError, select_axes
from vo_service.engine.writing import (
    BLANK_FOR_BITPIX,
    StampHeader,
    atomic_write,
    data_padding,
    dtype_bitpix,
    shifted_lookup_bytes,
)
from vo_service.shapes import CenterSize, Circle, Polygon, Range, Shape


class StampStatus(StrEnum):
    """What became of one region on one image. The values are the words users read: the
    manifest's ``status`` column, the web gallery's tags, the CLI's summary."""

    OK = "ok"  # the region lies inside the image
    PARTIAL = "partial"  # partly off the image: the stamp is clipped (or padded)
    STITCHED = "stitched"  # across the image edge, filled from other tiles (engine.stitch)
    NO_OVERLAP = "no-overlap"  # no stamp: off the image, or a filter selected nothing
    ERROR = "error"  # this region could not be cut (batch only; `cut` raises instead)


REASONS = ("spatial", "band", "time", "pol")  # why a result has status 'no-overlap'
SPATIAL_MISS = "the region does not overlap the image"


def describe_region(region: Shape) -> str:
    """The request as text, in SODA syntax where there is one (for HISTORY cards)."""
    if isinstance(region, Circle):
        return f"CIRCLE {region.ra:.10g} {region.dec:.10g} {region.radius:.10g}"
    if isinstance(region, Range):
        return (f"RANGE {region.ra_min:.10g} {region.ra_max:.10g} "
                f"{region.dec_min:.10g} {region.dec_max:.10g}")
    if isinstance(region, Polygon):
        return "POLYGON " + " ".join(f"{ra:.10g} {dec:.10g}" for ra, dec in region.vertices)
    if isinstance(region, CenterSize):
        return (f"CENTER {region.ra:.10g} {region.dec:.10g} "
                f"SIZE {region.width:.10g} {region.height:.10g} {region.unit}")
    raise TypeError(f"unsupported region {region!r}")


def describe_filters(band=None, time=None, pol=None) -> str:
    parts = []
    if band is not None:
        parts.append(f"BAND {band[0]:.10g} {band[1]:.10g}")
    if time is not None:
        parts.append(f"TIME {time[0]:.10g} {time[1]:.10g}")
    if pol:
        parts.append("POL " + " ".join(pol))
    return " ".join(parts)


@dataclass(eq=False)
class CutoutResult:
    """One stamp (or why there is none).

    `status`: 'ok' (region inside the image), 'partial' (region partly off the image:
    the box holds the part inside, or the whole region padded when
    pad=True), 'no-overlap', or 'error' (batch only; `cut` raises instead).
    `reason` (no-overlap): what missed, 'spatial' (the region is off the image) or
    the filter that selected nothing, 'band', 'time' or 'pol'; (error) 'image' when the
    image itself could not answer (`engine.batch.cut_unit`).
    `pixel_box`: the stamp's box in source pixels (0-based, half-open, FITS axis order);
    with padding it is the requested box and may extend past the image.
    `data`: raw source pixel values, big-endian, numpy order (None without a stamp).
    """

    status: StampStatus
    pixel_box: PixelBox | None
    message: str = ""
    data: np.ndarray | None = None
    index: int = 0
    request: str = ""
    shape_name: str = ""
    template: StampHeader | None = field(default=None, repr=False)
    blank: int | None = None
    lookup_hdus: list = field(default_factory=list, repr=False)
    reason: str | None = None

    @property
    def has_stamp(self) -> bool:
        return self.data is not None

    def header_bytes(self, *, primary: bool = True, extver_offset: int = 0,
                     extname: str | None = None) -> bytes:
        """The stamp's header, rendered from the image's template."""
        if self.template is None or self.pixel_box is None:
            raise CutoutError(f"no stamp: {self.status} {self.message}".strip())
        return self.template.render(
            self.pixel_box.ranges, primary=primary, request=self.request,
            shape_name=self.shape_name, blank=self.blank, extver_offset=extver_offset,
            extname=extname,
        )

    def chunks(self, *, primary: bool = True, extver_offset: int = 0,
               extname: str | None = None) -> list[bytes | memoryview]:
        """The stamp as FITS byte chunks (header, data, padding, lookup tables)."""
        header = self.header_bytes(primary=primary, extver_offset=extver_offset,
                                   extname=extname)
        # FITS is big-endian; a result that crossed a pickle (worker processes, Dask) may
        # hold native-order pixels: numpy unpickles protocol < 5 arrays in native order
        data = np.ascontiguousarray(self.data, dtype=self.data.dtype.newbyteorder(">"))
        parts: list[bytes | memoryview] = [
            header,
            memoryview(data).cast("B"),
            data_padding(data.nbytes),
        ]
        if self.lookup_hdus and self.pixel_box is not None:
            parts.append(shifted_lookup_bytes(
                self.lookup_hdus, (self.pixel_box.x0, self.pixel_box.y0), extver_offset))
        return parts

    def fits_bytes(self, *, primary: bool = True) -> bytes:
        """A complete FITS file (or, primary=False, extension HDUs) of this stamp."""
        return b"".join(self.chunks(primary=primary))  # one copy: join takes memoryviews

    def physical(self) -> np.ndarray | None:
        """Pixel values in physical units (BSCALE/BZERO applied, BLANK -> NaN), native
        byte order: what previews and statistics want."""
        if self.data is None or self.template is None:
            return None
        blank = self.blank if self.blank is not None else self.template.source_blank
        values = physical_values(self.data, bscale=self.template.bscale,
                                 bzero=self.template.bzero, blank=blank)
        return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))

    def write(self, path: str | Path) -> Path:
        """Write the stamp as one FITS file, atomically."""
        return atomic_write(path, self.chunks())

    def to_hdulist(self) -> fits.HDUList:
        """The stamp as an in-memory HDUList (lookup-table extensions included)."""
        return fits.HDUList.fromstring(self.fits_bytes())

    @cached_property
    def hdu(self) -> fits.PrimaryHDU | None:
        """The stamp as an astropy HDU (None without a stamp). `.data` is scaled by
        BSCALE/BZERO as astropy does; `self.data` holds the raw values."""
        if self.data is None:
            return None
        return self.to_hdulist()[0]


@dataclass(frozen=True)
class Plan:
    """Where one region's stamp comes from: requested and readable boxes."""

    status: StampStatus
    message: str
    box: PixelBox | None  # the stamp's box (requested if padded, else clipped)
    read_box: PixelBox | None  # the part inside the image
    reason: str | None = None  # no-overlap: 'spatial', 'band', 'time' or 'pol'


def plan_cutouts(image: OpenImage, regions: list[Shape], *, band=None, time=None, pol=None,
                 pad: bool = False, max_pixels: int | None = None) -> list[Plan]:
    """Pixel boxes of many regions on one image: one vectorized world->pixel call."""
    try:
        mapper = image.sky_to_pixel
    except ValueError as exc:
        raise CutoutError(f"{image.path.name}[{image.hdu_index}]: {exc}") from exc
    target = mapper.footprint[:2]
    selection = select_axes(image.wcs, image.header, image.fits_shape, target,
                            band=band, time=time, pol=pol)
    if selection.no_overlap:
        return [Plan(StampStatus.NO_OVERLAP, selection.no_overlap, None, None, selection.missed)
                for _ in regions]
    plans = []
    for window in region_windows(mapper, regions):
        if window is None:
            plans.append(Plan(StampStatus.NO_OVERLAP, SPATIAL_MISS, None, None, "spatial"))
            continue
        full = window.requested.with_ranges(selection.ranges)
        clipped = window.inside.with_ranges(selection.ranges)
        status = StampStatus.OK if window.complete else StampStatus.PARTIAL
        box = full if pad else clipped
        if max_pixels is not None and box.size > max_pixels:
            plans.append(Plan(StampStatus.ERROR, f"the cutout has {box.size} pixels, more than the "
                              f"limit of {max_pixels}; ask for a smaller region", None, None))
            continue
        plans.append(Plan(status, "", box, clipped))
    return plans


def padded_stamp(image: OpenImage, plan: Plan, pixels: np.ndarray) -> tuple[np.ndarray,
                                                                             int | None]:
    """The requested box filled with NaN (floats) or BLANK (integers) around `pixels`."""
    assert plan.box is not None and plan.read_box is not None
    if plan.box == plan.read_box:
        return pixels, None
    blank = None
    if pixels.dtype.kind == "f":
        fill: float | int = math.nan
    else:
        blank = int(image.header.get("BLANK", BLANK_FOR_BITPIX[dtype_bitpix(pixels.dtype)]))
        fill = blank
    stamp = np.full(plan.box.shape, fill, dtype=pixels.dtype)
    inner = tuple(
        slice(r_start - b_start, r_stop - b_start)
        for (b_start, _), (r_start, r_stop) in zip(
            reversed(plan.box.ranges), reversed(plan.read_box.ranges), strict=True)
    )
    stamp[inner] = pixels
    return stamp, blank


def make_template(image: OpenImage, origfile: str | None, bitpix: int) -> StampHeader:
    return StampHeader(image.header, origfile=origfile or image.path.name,
                       orig_ext=image.hdu_index, data_bitpix=bitpix)
