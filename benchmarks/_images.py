"""FITS headers of the synthetic benchmark images: float32, TAN-SIP with a small quadratic
distortion, so every method pays for a real distortion model.

Shared by ``batch_cutouts.py`` and ``time_series.py``; not a benchmark itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def sip_image_header(side: int, centre: Sequence[float], crpix: Sequence[float],
                     pixel_arcsec: float) -> fits.Header:
    """A ``side`` x ``side`` float32 image header, TAN-SIP around ``centre`` (deg)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    wcs.wcs.crval = list(centre)
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.cd = np.array([[-pixel_arcsec, 0.0], [0.0, pixel_arcsec]]) / 3600
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = side
    header["NAXIS2"] = side
    header.extend(wcs.to_header(), update=True)
    header["A_ORDER"] = header["B_ORDER"] = 2
    header["A_2_0"], header["B_0_2"] = 1e-8, -1e-8
    return header
