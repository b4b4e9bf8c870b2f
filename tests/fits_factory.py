"""Synthetic FITS images with known WCS for engine tests (like astrocut's utils_for_test).

Pixel values encode their position (value = y * 1000 + x for images), so a stamp shows
where it was cut from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def celestial_header(crval=(150.0, 2.2), crpix=(100.5, 80.5), scale_deg=1.0 / 3600,
                     rotation_deg=20.0, projection="TAN", sip=False, frame="ICRS") -> fits.Header:
    """A celestial WCS header: CD matrix with rotation, optional SIP distortion."""
    wcs = WCS(naxis=2)
    lon, lat = ("GLON", "GLAT") if frame == "GALACTIC" else ("RA--", "DEC-")
    suffix = "-SIP" if sip else ""
    wcs.wcs.ctype = [f"{lon}-{projection}{suffix}", f"{lat}-{projection}{suffix}"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = list(crpix)
    theta = np.radians(rotation_deg)
    wcs.wcs.cd = scale_deg * np.array([[-np.cos(theta), np.sin(theta)],
                                       [np.sin(theta), np.cos(theta)]])
    if frame not in ("GALACTIC",):
        wcs.wcs.radesys = frame
        if frame in ("FK5", "FK4"):
            wcs.wcs.equinox = 2000.0 if frame == "FK5" else 1950.0
    header = wcs.to_header()
    if sip:
        header["A_ORDER"] = 2
        header["B_ORDER"] = 2
        header["A_0_2"] = 2.0e-5
        header["A_1_1"] = -1.5e-5
        header["A_2_0"] = 3.0e-5
        header["B_0_2"] = -2.5e-5
        header["B_1_1"] = 1.0e-5
        header["B_2_0"] = 1.2e-5
    return header


def position_image(shape=(160, 200), dtype=np.float32) -> np.ndarray:
    """Pixel values y * 1000 + x (numpy order shape)."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return (y * 1000 + x).astype(dtype)


def write_image(path: Path, header: fits.Header, data: np.ndarray) -> Path:
    header = header.copy()
    header["BUNIT"] = "adu"
    header["TELESCOP"] = "SYNTH"
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
    return path


def sip_image(path: Path, **wcs_options) -> Path:
    """A 200x160 float32 TAN-SIP image."""
    return write_image(path, celestial_header(sip=True, **wcs_options), position_image())


def pole_image(path: Path) -> Path:
    """A 200x200 TAN image centred on the north celestial pole, 10 arcsec pixels."""
    header = celestial_header(crval=(0.0, 90.0), crpix=(100.5, 100.5), scale_deg=10 / 3600,
                              rotation_deg=0.0)
    return write_image(path, header, position_image((200, 200)))


def scaled_int_image(path: Path) -> Path:
    """int16 data with BSCALE/BZERO and BLANK pixels (raw values -32768 in a corner)."""
    raw = (position_image((160, 200), np.int64) % 30000 - 15000).astype(np.int16)
    raw[:10, :10] = -32768
    header = celestial_header()
    hdu = fits.PrimaryHDU(data=raw, header=header, do_not_scale_image_data=True)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.header["BLANK"] = -32768
    hdu.header["BUNIT"] = "Jy"
    hdu.writeto(path, overwrite=True)
    return path


def time_cube(path: Path, n_times=10, mjd0=60000.0, step_days=1.0) -> Path:
    """RA, Dec, TIME cube: plane k observed at MJD mjd0 + k * step_days."""
    header = celestial_header(crpix=(25.5, 20.5))
    header["WCSAXES"] = 3
    header["CTYPE3"] = "TIME"
    header["CUNIT3"] = "d"
    header["CRPIX3"] = 1.0
    header["CRVAL3"] = 0.0
    header["CDELT3"] = step_days
    header["MJDREF"] = mjd0
    header["TIMESYS"] = "UTC"
    data = np.stack([position_image((40, 50)) + 1e6 * k for k in range(n_times)])
    return write_image(path, header, data)


def stokes_cube(path: Path) -> Path:
    """RA, Dec, STOKES (I, Q, U, V) cube."""
    header = celestial_header(crpix=(25.5, 20.5))
    header["WCSAXES"] = 3
    header["CTYPE3"] = "STOKES"
    header["CRPIX3"] = 1.0
    header["CRVAL3"] = 1.0
    header["CDELT3"] = 1.0
    data = np.stack([position_image((40, 50)) + 1e6 * k for k in range(4)])
    return write_image(path, header, data)


def epoch_image(path: Path, mjd_obs: float, exptime_s: float) -> Path:
    """A plain image with MJD-OBS and EXPTIME (for TIME checks without a time axis)."""
    header = celestial_header()
    header["MJD-OBS"] = mjd_obs
    header["EXPTIME"] = exptime_s
    return write_image(path, header, position_image())


def compressed_copy(source: Path, path: Path, tile_shape=None) -> Path:
    """RICE tile-compressed copy of a primary image (row tiles by default)."""
    with fits.open(source) as hdus:
        data, header = hdus[0].data, hdus[0].header
        compressed = fits.CompImageHDU(data=data, header=header, compression_type="RICE_1",
                                       tile_shape=tile_shape)
        fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(path, overwrite=True)
    return path


def rectangular_pixel_header(crval=(150.0, 2.2), crpix=(200.5, 150.5),
                             pixel_arcsec=(0.260, 0.288), rotation_deg=30.0,
                             tpv_x2=0.0) -> fits.Header:
    """A TAN (or, with ``tpv_x2``, TPV-distorted) WCS whose pixels are not square.

    One pixel step along axis 1 spans ``pixel_arcsec[0]`` on the sky, along axis 2
    ``pixel_arcsec[1]`` (CD columns of those lengths, rotated by ``rotation_deg``).
    ``tpv_x2`` adds xi += tpv_x2 * x**2 (x, xi in degrees, TPV PV1_4), which stretches the
    pixels along axis 1 away from the reference pixel: the local scale then differs from
    the reference one.
    """
    theta = np.radians(rotation_deg)
    rotation = np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cd = rotation @ np.diag(np.array(pixel_arcsec) / 3600.0)
    projection = "TPV" if tpv_x2 else "TAN"
    header = fits.Header()
    header["WCSAXES"] = 2
    header["CTYPE1"] = f"RA---{projection}"
    header["CTYPE2"] = f"DEC--{projection}"
    header["CRVAL1"], header["CRVAL2"] = crval
    header["CRPIX1"], header["CRPIX2"] = crpix
    for i in range(2):
        for j in range(2):
            header[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    header["RADESYS"] = "ICRS"
    if tpv_x2:
        header["PV1_1"] = 1.0  # xi = x + tpv_x2 x^2
        header["PV1_4"] = float(tpv_x2)
        header["PV2_1"] = 1.0  # eta = y
    return header


def rectangular_pixel_image(path: Path, shape=(300, 400), **header_options) -> Path:
    """A float32 image (numpy ``shape``) with `rectangular_pixel_header`'s WCS."""
    return write_image(path, rectangular_pixel_header(**header_options), position_image(shape))
