"""Small synthetic FITS images with a WCS, for the archive index tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def tan_header(ra: float, dec: float, nx: int = 40, ny: int = 30, scale_arcsec: float = 1.0,
               rotation_deg: float = 0.0) -> fits.Header:
    """A TAN WCS header centred on (ra, dec) with square pixels (optionally rotated)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    theta = np.radians(rotation_deg)
    step = scale_arcsec / 3600.0
    wcs.wcs.cd = step * np.array([[-np.cos(theta), np.sin(theta)],
                                  [np.sin(theta), np.cos(theta)]])
    wcs.wcs.radesys = "ICRS"
    header = wcs.to_header()
    header["NAXIS"] = 2
    header["NAXIS1"] = nx
    header["NAXIS2"] = ny
    return header


def write_image(path: Path, ra: float, dec: float, *, nx: int = 40, ny: int = 30,
                scale_arcsec: float = 1.0, rotation_deg: float = 0.0,
                cards: dict[str, object] | None = None) -> Path:
    """Write a float32 image with a TAN WCS (and extra header cards) to ``path``."""
    header = tan_header(ra, dec, nx, ny, scale_arcsec, rotation_deg)
    for key, value in (cards or {}).items():
        header[key] = value
    data = np.zeros((ny, nx), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
    return path


def write_mef(path: Path, ra: float, dec: float, products: tuple[str, ...]) -> Path:
    """Empty primary plus one image extension per product (EXTNAME, PRODTYPE)."""
    hdus = [fits.PrimaryHDU(header=fits.Header([("TELESCOP", "Euclid"), ("OBS_COLL", "MEFS")]))]
    for product in products:
        header = tan_header(ra, dec)
        header["EXTNAME"] = product
        header["PRODTYPE"] = product
        hdus.append(fits.ImageHDU(data=np.zeros((30, 40), np.float32), header=header))
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
