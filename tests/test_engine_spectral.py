"""BAND, TIME and POL select the right planes of cubes; no selection is a no-overlap."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.constants import c
from astropy.coordinates import FK4, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from tests import fits_factory
from vo_service.engine.api import cut
from vo_service.engine.spectral import CutoutError
from vo_service.shapes import CenterSize

warnings.simplefilter("ignore", FITSFixedWarning)
CUBE_CENTRE = CenterSize(51.33377, 30.63417, 10, 10)
REST_HZ = 110.2013541e9


def lsrk_to_barycentric_kms(ra: float, dec: float) -> float:
    """Barycentric minus LSRK radial velocity of a source: minus the standard solar
    motion (20 km/s towards RA 18h, Dec +30, B1900) projected on the target."""
    apex = SkyCoord(270 * u.deg, 30 * u.deg, frame=FK4(equinox="B1900")).icrs
    return -20.0 * float(np.cos(apex.separation(SkyCoord(ra, dec, unit="deg")).rad))


def channel_barycentric_wavelength(header: fits.Header, channel: int, shift_kms: float) -> float:
    """VOPT (LSRK, optical convention) of a channel -> barycentric wavelength in metres."""
    v_lsrk = header["CRVAL3"] + (channel + 1 - header["CRPIX3"]) * header["CDELT3"]  # m/s
    rest_m = (c / (REST_HZ * u.Hz)).to_value(u.m)
    lsrk_m = rest_m * (1 + v_lsrk / c.to_value(u.m / u.s))
    return lsrk_m * (1 + shift_kms * 1e3 / c.to_value(u.m / u.s))


def test_band_on_lsrk_velocity_cube_selects_barycentric_channels(real_data):
    path = real_data / "fits/derived/l1448_13co_restfrq.fits"
    header = fits.getheader(path)
    shift = lsrk_to_barycentric_kms(51.33377, 30.63417)
    assert 5 < abs(shift) < 8  # ~6.4 km/s, ~96 channels of 66 m/s
    lo = channel_barycentric_wavelength(header, 20, shift)
    hi = channel_barycentric_wavelength(header, 30, shift)
    result = cut(path, 0, CUBE_CENTRE, band=(lo, hi))
    assert result.status == "ok"
    start, stop = result.pixel_box.ranges[2]
    assert abs(start - 20) <= 1 and abs(stop - 31) <= 1
    data = fits.getdata(path)
    box = result.pixel_box
    assert np.array_equal(result.hdu.data, data[start:stop, box.y0:box.y1, box.x0:box.x1])
    stamp_wcs = WCS(result.hdu.header)
    source_wcs = WCS(header)
    assert np.allclose(stamp_wcs.wcs_pix2world(0, 0, 0, 0), source_wcs.wcs_pix2world(
        box.x0, box.y0, start, 0))
    # ignoring the frame (LSRK taken as barycentric) would select other channels entirely
    naive_lo = channel_barycentric_wavelength(header, 20, 0.0)
    naive_hi = channel_barycentric_wavelength(header, 30, 0.0)
    naive = cut(path, 0, CUBE_CENTRE, band=(naive_lo, naive_hi))
    assert naive.status == "no-overlap" or naive.pixel_box.ranges[2] != (start, stop)


def test_band_outside_the_cube_is_no_overlap_not_a_slab(real_data):
    path = real_data / "fits/derived/l1448_13co_restfrq.fits"
    for band in ((1e-3, 2e-3), (3e-3, 4e-3)):
        result = cut(path, 0, CUBE_CENTRE, band=band)
        assert result.status == "no-overlap" and "BAND" in result.message


def test_band_on_velocity_cube_without_rest_frequency_is_a_clear_error(real_data):
    with pytest.raises(CutoutError, match="rest frequency"):
        cut(real_data / "fits/cubes/l1448_13co.fits", 0, CUBE_CENTRE, band=(2.7e-3, 2.8e-3))


def test_no_band_keeps_every_channel(real_data):
    result = cut(real_data / "fits/cubes/l1448_13co.fits", 0, CUBE_CENTRE)
    assert result.data.shape == (53, 10, 10)


def test_time_axis_selects_planes(tmp_path):
    path = fits_factory.time_cube(tmp_path / "time.fits")
    position = WCS(fits.getheader(path)).celestial.pixel_to_world(25, 20)
    region = CenterSize(position.ra.deg, position.dec.deg, 6, 6)
    result = cut(path, 0, region, time=(60002.9, 60005.1))
    assert result.pixel_box.ranges[2] == (3, 6)
    assert np.array_equal(result.data[:, 0, 0] // 1_000_000, [3, 4, 5])
    header = fits.Header.fromstring(result.header_bytes().decode("ascii"))
    assert header["CRPIX3"] == 1.0 - 3 and (header["CUTZ0"], header["CUTZ1"]) == (4, 6)
    assert cut(path, 0, region, time=(50000, 50001)).status == "no-overlap"


def test_time_on_an_image_checks_the_observation_epoch(tmp_path):
    path = fits_factory.epoch_image(tmp_path / "epoch.fits", mjd_obs=60100.5, exptime_s=3600)
    position = WCS(fits.getheader(path)).pixel_to_world(100, 80)
    region = CenterSize(position.ra.deg, position.dec.deg, 8, 8)
    assert cut(path, 0, region, time=(60100.52, 60101)).status == "ok"
    missed = cut(path, 0, region, time=(60100.6, 60101))  # starts after the exposure ended
    assert missed.status == "no-overlap" and "TIME" in missed.message
    plain = fits_factory.sip_image(tmp_path / "plain.fits")
    assert cut(plain, 0, region, time=(0, 1e6)).status == "no-overlap"


def test_pol_selects_stokes_planes(tmp_path):
    path = fits_factory.stokes_cube(tmp_path / "stokes.fits")
    position = WCS(fits.getheader(path)).celestial.pixel_to_world(25, 20)
    region = CenterSize(position.ra.deg, position.dec.deg, 4, 4)
    result = cut(path, 0, region, pol=["Q", "U"])
    assert result.pixel_box.ranges[2] == (1, 3)
    assert cut(path, 0, region, pol=["RR"]).status == "no-overlap"
    image = fits_factory.sip_image(tmp_path / "image.fits")
    assert cut(image, 0, region, pol=["I"]).status == "ok"
    assert cut(image, 0, region, pol=["Q"]).status == "no-overlap"


def test_band_on_an_image_with_a_degenerate_frequency_axis(real_data):
    path = real_data / "fits/images/first_J105007+304037.fits"  # 1.4 GHz, 2-D data, FREQ axis
    region = CenterSize(162.52982, 30.67692, 10, 10)
    assert cut(path, 0, region, band=(0.2, 0.22)).status == "ok"  # 21 cm
    missed = cut(path, 0, region, band=(1e-6, 2e-6))
    assert missed.status == "no-overlap" and "passband" in missed.message


def test_no_overlap_says_which_constraint_missed(real_data, tmp_path):
    """`reason` tells callers (SODA: 204 vs 400) what missed without reading messages."""
    image = fits_factory.sip_image(tmp_path / "image.fits")
    position = WCS(fits.getheader(image)).pixel_to_world(100, 80)
    region = CenterSize(position.ra.deg, position.dec.deg, 8, 8)
    assert cut(image, 0, region).reason is None
    assert cut(image, 0, CenterSize(10.0, -40.0, 8, 8)).reason == "spatial"
    assert cut(image, 0, region, time=(0, 1e6)).reason == "time"  # no observation time
    assert cut(image, 0, region, pol=["Q"]).reason == "pol"
    cube = real_data / "fits/derived/l1448_13co_restfrq.fits"
    assert cut(cube, 0, CUBE_CENTRE, band=(1e-3, 2e-3)).reason == "band"
    radio = real_data / "fits/images/first_J105007+304037.fits"
    assert cut(radio, 0, CenterSize(162.52982, 30.67692, 10, 10),
               band=(1e-6, 2e-6)).reason == "band"
    times = fits_factory.time_cube(tmp_path / "time.fits")
    assert cut(times, 0, CUBE_CENTRE, time=(50000, 50001)).reason == "time"
    stokes = fits_factory.stokes_cube(tmp_path / "stokes.fits")
    assert cut(stokes, 0, region, pol=["RR"]).reason == "pol"
