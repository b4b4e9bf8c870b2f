"""Combined stacks: stamps of one position from several images (epochs, overlapping
pointings, tiles) combined into one image on a common grid, with the number of images
that gave each pixel. What astrocut's ``CutoutsCombiner`` does for stamps on one pixel
grid, for stamps on any grids:

- the common grid is the first stamp's (or one given); a stamp on that grid, shifted by
  whole pixels, is copied exactly, any other is resampled with ``reproject``
  (`engine.resample`: ``interp`` or ``flux``);
- ``mean``, ``median`` and ``sum`` of the stamps that cover a pixel (NaN ignored);
  ``ivar``, the inverse-variance weighted mean, needs an RMS image per stamp (weights
  1 / RMS^2; pixels with an RMS that is not a positive number are left out);
- an RMS image comes with the result when RMS images were given: ``ivar``
  1 / sqrt(sum of weights); ``mean`` sqrt(sum RMS^2) / n; ``sum`` sqrt(sum RMS^2);
  ``median`` sqrt(pi / 2) times the mean's (the large-n efficiency of a median of
  Gaussian noise). Resampled RMS images are interpolated like the data, so the noise
  correlation that resampling adds is not modelled.
- the count of contributing stamps per pixel (int16) always comes with it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from vo_service.engine.grids import shared_grid_offset
from vo_service.engine.resample import DEFAULT_METHOD, resample

COMBINE_METHODS = ("mean", "median", "sum", "ivar")
MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2)


@dataclass(frozen=True)
class Stamp:
    """One input: physical pixel values (NaN = no data), their celestial WCS, an optional
    RMS image on the same pixels, and the name the result's header gives it."""

    data: np.ndarray
    wcs: WCS
    label: str
    rms: np.ndarray | None = None


@dataclass
class CombinedStack:
    """The combined image, the count of stamps per pixel and (with RMS inputs) its RMS."""

    data: np.ndarray
    count: np.ndarray
    rms: np.ndarray | None
    wcs: WCS
    method: str
    labels: list[str]

    def to_hdulist(self) -> fits.HDUList:
        """Primary HDU: the combined image with its WCS, ``COMBINE`` (method), ``NCOMBINE``
        and ``IMCMBnnn`` (inputs, the IRAF convention); then COUNT (and RMS) extensions."""
        header = self.wcs.to_header(relax=True)
        header["COMBINE"] = (self.method, "mean, median, sum or ivar")
        header["NCOMBINE"] = (len(self.labels), "stamps combined")
        for number, label in enumerate(self.labels, start=1):
            header[f"IMCMB{number:03d}"] = label
        header["BUNITCNT"] = ("", "COUNT: stamps that gave each pixel")
        hdus = [fits.PrimaryHDU(self.data, header)]
        hdus.append(fits.ImageHDU(self.count, self.wcs.to_header(relax=True), name="COUNT"))
        if self.rms is not None:
            hdus.append(fits.ImageHDU(self.rms, self.wcs.to_header(relax=True), name="RMS"))
        return fits.HDUList(hdus)


def combine(stamps: Sequence[Stamp], *, method: str = "mean",
            grid: tuple[WCS, tuple[int, int]] | None = None,
            resampling: str = DEFAULT_METHOD) -> CombinedStack:
    """Combine ``stamps`` on ``grid`` ((celestial WCS, numpy shape); default: the first
    stamp's). Raises ValueError for an unknown method, no stamps, or ``ivar`` without
    an RMS image for every stamp."""
    if method not in COMBINE_METHODS:
        raise ValueError(f"unknown combine method {method!r}; use one of "
                         + ", ".join(COMBINE_METHODS))
    if not stamps:
        raise ValueError("nothing to combine: give at least one stamp")
    with_rms = all(stamp.rms is not None for stamp in stamps)
    if method == "ivar" and not with_rms:
        raise ValueError("the inverse-variance mean (ivar) needs an RMS image for every "
                         "stamp")
    wcs, shape = grid if grid is not None else (stamps[0].wcs.celestial, stamps[0].data.shape)
    values = np.full((len(stamps), *shape), np.nan)
    variances = np.full((len(stamps), *shape), np.nan) if with_rms else None
    for number, stamp in enumerate(stamps):
        values[number] = on_grid(stamp.data, stamp.wcs, wcs, shape, resampling)
        if variances is not None and stamp.rms is not None:
            rms = on_grid(stamp.rms, stamp.wcs, wcs, shape, resampling)
            variances[number] = np.where(rms > 0, rms * rms, np.nan)
    combined, count, rms = _combine(values, variances, method)
    dtype = np.float64 if any(s.data.dtype == np.float64 for s in stamps) else np.float32
    return CombinedStack(combined.astype(dtype), count.astype(np.int16),
                         None if rms is None else rms.astype(dtype), wcs, method,
                         [stamp.label for stamp in stamps])


def on_grid(pixels: np.ndarray, source: WCS, target: WCS, shape: tuple[int, int],
            resampling: str) -> np.ndarray:
    """``pixels`` on the target grid: copied when the grids are one (shifted by whole
    pixels), else resampled; NaN where the stamp has nothing."""
    offset = shared_grid_offset(target, source.celestial)
    if offset is None:
        return resample(pixels, source.celestial, target, shape, resampling)[0]
    out = np.full(shape, np.nan)
    dx, dy = offset  # target pixel (x, y) is source pixel (x + dx, y + dy)
    height, width = pixels.shape
    x0, x1 = max(0, -dx), min(shape[1], width - dx)
    y0, y1 = max(0, -dy), min(shape[0], height - dy)
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = pixels[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return out


def _combine(values: np.ndarray, variances: np.ndarray | None, method: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(combined, count, rms) of a stack of (n, ny, nx) values, NaN = missing."""
    usable = np.isfinite(values)
    if method == "ivar":
        assert variances is not None
        usable &= np.isfinite(variances)
    count = usable.sum(axis=0)
    empty = count == 0
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        if method == "ivar":
            weights = np.where(usable, 1.0 / variances, 0.0)
            total = weights.sum(axis=0)
            combined = (np.where(usable, values, 0.0) * weights).sum(axis=0) / total
            rms = 1.0 / np.sqrt(total)
        else:
            if method == "mean":
                combined = np.nanmean(values, axis=0)
            elif method == "median":
                combined = np.nanmedian(values, axis=0)
            else:
                combined = np.nansum(values, axis=0)
            rms = None
            if variances is not None:
                summed = np.nansum(np.where(usable, variances, np.nan), axis=0)
                rms = np.sqrt(summed) if method == "sum" else np.sqrt(summed) / count
                if method == "median":
                    rms = rms * MEDIAN_EFFICIENCY
    combined = np.where(empty, np.nan, combined)
    if rms is not None:
        rms = np.where(empty, np.nan, rms)
    return combined, count, rms


def read_stamp(path: str | Path, rms_path: str | Path | None = None,
               hdu: int | None = None) -> Stamp:
    """A stamp from a FITS file (the first image HDU with a celestial WCS, or ``hdu``), in
    physical values (BSCALE/BZERO applied, BLANK as NaN), with an optional RMS file."""
    from vo_service.engine.api import first_image_hdu

    path = Path(path)
    number = first_image_hdu(path) if hdu is None else hdu
    with fits.open(path) as hdus, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        image = hdus[number]
        data = _physical(image)
        wcs = WCS(image.header, fobj=hdus).celestial
    rms = None
    if rms_path is not None:
        rms_path = Path(rms_path)
        with fits.open(rms_path) as hdus:
            rms = _physical(hdus[first_image_hdu(rms_path)])
        if rms.shape != data.shape:
            raise ValueError(f"{rms_path.name} ({rms.shape}) does not have the pixels of "
                             f"{path.name} ({data.shape})")
    return Stamp(data, wcs, path.name, rms)


def _physical(hdu) -> np.ndarray:
    """The HDU's pixels as floats, BLANK as NaN (astropy applies BSCALE/BZERO)."""
    blank = hdu.header.get("BLANK")
    raw_integer = hdu.header.get("BITPIX", -32) > 0
    data = np.asarray(hdu.data)
    values = data.astype(np.float64 if data.dtype.itemsize > 4 else np.float32)
    if raw_integer and blank is not None and data.dtype.kind in "iu":
        values[data == blank] = np.nan
    return values


def combine_files(files: Sequence[str | Path], *, method: str = "mean",
                  rms: Sequence[str | Path] | None = None, output: str | Path | None = None,
                  resampling: str = DEFAULT_METHOD) -> fits.HDUList | Path:
    """Combine FITS stamps of one position (astrocut's ``CutoutsCombiner``, generalised).

    Parameters
    ----------
    files : the stamps; the first one's grid is the common grid.
    method : ``mean``, ``median``, ``sum`` or ``ivar`` (inverse-variance mean: needs
        ``rms``).
    rms : an RMS image per stamp, on the stamp's pixels (e.g. its RMS product cut with the
        same region).
    output : write the result there (atomically) and return its path; None returns the
        HDUList.
    resampling : ``interp`` or ``flux``, for stamps not on the common pixel grid.

    Returns the combined image (primary HDU), ``COUNT`` and, with ``rms``, ``RMS``.
    """
    if rms is not None and len(rms) != len(files):
        raise ValueError(f"{len(rms)} RMS files for {len(files)} stamps: give one per stamp")
    stamps = [read_stamp(path, None if rms is None else rms[number])
              for number, path in enumerate(files)]
    hdulist = combine(stamps, method=method, resampling=resampling).to_hdulist()
    if output is None:
        return hdulist
    from vo_service.engine.writing import atomic_write

    with_bytes = _hdulist_bytes(hdulist)
    return atomic_write(output, [with_bytes])


def _hdulist_bytes(hdulist: fits.HDUList) -> bytes:
    import io

    buffer = io.BytesIO()
    hdulist.writeto(buffer)
    return buffer.getvalue()
