"""An aligned cube of a time series: every epoch's stamp resampled onto the first full
stamp's pixel grid (``reproject``), stacked along a time axis — the shape of a target
pixel file (time x y x x).

Unlike the stamps of :mod:`vo_service.engine.stack` these pixels are *resampled*; the
header says how (``RESAMPLE``, ``REPROJV``) and which flux convention holds
(``FLUXCONV``): images whose BUNIT is a surface brightness (per steradian or per square
arcsecond) keep their values; any other unit is taken as flux per pixel and multiplied by
the ratio of the pixel areas (reference / source), so that the flux of a source is kept.
Pixels of the reference grid outside an epoch's stamp are NaN.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_area

from vo_service.engine.stack import EpochStamp, epochs_table_hdu, extension_bytes
from vo_service.engine.writing import empty_primary_bytes

METHODS = ("bilinear", "exact")
SURFACE_BRIGHTNESS = re.compile(r"(/\s*(sr|arcsec\**2|arcsec\^2|beam))|(sr-1|arcsec-2|beam-1)",
                                re.I)


class CubeError(ValueError):
    """No cube can be made (no epoch with a full stamp, an unknown method)."""


def _stamp_wcs(stamp: EpochStamp) -> tuple[WCS, fits.Header]:
    assert stamp.result is not None
    header = fits.Header.fromstring(stamp.result.header_bytes(primary=True).decode("ascii"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header).celestial, header


def is_surface_brightness(bunit: str) -> bool:
    """Whether a BUNIT is per solid angle (kept by resampling) rather than per pixel."""
    return bool(SURFACE_BRIGHTNESS.search(bunit or ""))


def aligned_cube(stamps: Sequence[EpochStamp], method: str = "bilinear"
                 ) -> tuple[np.ndarray, fits.Header, list[EpochStamp]]:
    """(cube float32 (planes, ny, nx), header of the cube HDU, the stamps of the planes).

    The reference grid is the first 'ok' stamp in time order (a full stamp); every stamp
    with pixels ('ok', 'partial', 'empty') becomes one plane, in time order.
    """
    if method not in METHODS:
        raise CubeError(f"resampling method must be one of {', '.join(METHODS)}, not {method!r}")
    from reproject import __version__ as reproject_version
    from reproject import reproject_exact, reproject_interp

    planes = [s for s in stamps if s.has_stamp]
    reference = next((s for s in planes if s.status == "ok"), None)
    if reference is None:
        raise CubeError("no epoch has a full stamp of the target to align the others on")
    ref_wcs, ref_header = _stamp_wcs(reference)
    assert reference.result is not None and reference.result.data is not None
    shape = reference.result.data.shape[-2:]
    ref_area = proj_plane_pixel_area(ref_wcs)
    per_pixel = not is_surface_brightness(str(ref_header.get("BUNIT", "")))
    cube = np.full((len(planes), *shape), np.nan, dtype=np.float32)
    ratios = []
    for k, stamp in enumerate(planes):
        assert stamp.result is not None
        values = stamp.result.physical()
        assert values is not None
        values = values.reshape(values.shape[-2:]).astype(np.float64)
        wcs, _ = _stamp_wcs(stamp)
        if stamp is reference:
            cube[k] = values
            ratios.append(1.0)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "exact":
                resampled, _ = reproject_exact((values, wcs), ref_wcs, shape_out=shape)
            else:
                resampled, _ = reproject_interp((values, wcs), ref_wcs, shape_out=shape,
                                                order="bilinear")
        ratio = ref_area / proj_plane_pixel_area(wcs) if per_pixel else 1.0
        ratios.append(ratio)
        cube[k] = resampled * ratio
    header = fits.Header()
    for key, value in ref_wcs.to_header(relax=True).items():
        header[key] = value
    header["WCSAXES"] = 3
    header["CTYPE3"] = ("EPOCH", "plane n = row n of the EPOCHS table")
    header["CRPIX3"], header["CRVAL3"], header["CDELT3"] = 1.0, 1.0, 1.0
    header["BUNIT"] = (str(ref_header.get("BUNIT", "")), "as in the source images")
    header["RESAMPLE"] = ("reproject_exact" if method == "exact" else
                          "reproject_interp bilinear", "how epochs were resampled")
    header["REPROJV"] = (reproject_version, "reproject version")
    header["REFEPOCH"] = (reference.number, "epoch whose pixel grid all planes share")
    header["REFIMAGE"] = (reference.epoch.image_id, "image of the reference grid")
    header["FLUXCONV"] = ("PER_PIXEL" if per_pixel else "SURF_BRI",
                          "values scaled by pixel areas" if per_pixel
                          else "surface brightness kept")
    header["RESAMPLD"] = (True, "pixels are resampled, not source pixels")
    header["COMMENT"] = ("FLUXCONV=PER_PIXEL: each plane is multiplied by (reference pixel "
                         "area / its own pixel area), so a source keeps its flux. "
                         "SURF_BRI: values are kept (per solid angle).")
    for k, ratio in enumerate(ratios):
        planes[k].extras["AREARAT"] = (ratio, "pixel-area factor of this plane")
    return cube, header, planes


def cube_bytes(stamps: Sequence[EpochStamp], method: str = "bilinear",
               description: Sequence[tuple[str, object, str]] = ()) -> bytes:
    """A FITS file: empty primary, ``CUBE`` (planes x ny x nx, float32) and ``EPOCHS``
    (one row per plane, in plane order)."""
    from vo_service.engine.writing import card

    cube, header, planes = aligned_cube(stamps, method)
    cards = [card(key, value, comment) for key, value, comment in description]
    primary = empty_primary_bytes(cards)
    image = fits.ImageHDU(cube, header, name="CUBE")
    table = epochs_table_hdu(planes)
    factors = np.array([float(p.extras["AREARAT"][0]) for p in planes])  # type: ignore[index]
    table = fits.BinTableHDU.from_columns(
        table.columns + fits.ColDefs([fits.Column(name="AREA_RATIO", format="D",
                                                  array=factors)]), name="EPOCHS")
    return primary + extension_bytes(image) + extension_bytes(table)
