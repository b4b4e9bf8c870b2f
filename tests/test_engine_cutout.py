"""Cutouts are exact: pixels equal the source (and astropy Cutout2D), the stamp's WCS maps
every corner to the same sky position as the source WCS, the header records provenance."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, FITSFixedWarning

from tests import fits_factory
from vo_service.engine.api import cut
from vo_service.engine.cutout import CutoutResult, StampStatus
from vo_service.engine.spectral import CutoutError
from vo_service.shapes import CenterSize, Circle

warnings.simplefilter("ignore", FITSFixedWarning)


def served_hdus(real_data) -> list[tuple[str, int]]:
    catalog = json.loads((real_data / "catalog.json").read_text())
    return [(entry["file"], entry["hdu"]) for entry in catalog["entries"] if entry["served"]]


def source_wcs(hdus: fits.HDUList, index: int) -> WCS:
    return WCS(hdus[index].header, fobj=hdus)


def icrs_of_pixel(wcs: WCS, x: float, y: float) -> SkyCoord:
    return wcs.celestial.pixel_to_world(x, y).icrs


def assert_wcs_round_trip(result: CutoutResult, wcs: WCS) -> None:
    """Every stamp corner maps to the same world position as in the source."""
    stamp = result.to_hdulist()
    stamp_wcs = WCS(fits.Header.fromstring(result.header_bytes().decode("ascii")), fobj=stamp)
    box = result.pixel_box
    height, width = result.data.shape[-2:]
    xs = np.array([0, width - 1, 0, width - 1, (width - 1) / 2])
    ys = np.array([0, 0, height - 1, height - 1, (height - 1) / 2])
    extra = [np.zeros(5)] * (wcs.naxis - 2)
    source_world = wcs.all_pix2world(xs + box.x0, ys + box.y0, *extra, 0)
    stamp_world = stamp_wcs.all_pix2world(xs, ys, *extra, 0)
    for axis in range(2):
        difference = (np.asarray(source_world[axis]) - np.asarray(stamp_world[axis]) + 180) % 360
        assert np.allclose(difference - 180, 0, atol=1e-9), (axis, difference - 180)


def test_every_served_real_hdu_matches_cutout2d_and_keeps_the_wcs(real_data):
    checked = 0
    for name, index in served_hdus(real_data):
        path = real_data / name
        with fits.open(path) as hdus:
            wcs = source_wcs(hdus, index)
            data = hdus[index].data
            ny, nx = data.shape[-2:]
            for x, y, size in ((nx / 2 + 0.27, ny / 2 - 0.19, (9, 12)), (2.2, ny - 3.4, (15, 10))):
                position = icrs_of_pixel(wcs, x, y)
                if not np.isfinite(position.ra.deg):
                    continue  # outside an all-sky projection's valid area
                region = CenterSize(position.ra.deg, position.dec.deg, size[1], size[0])
                result = cut(path, index, region)
                assert result.status in ("ok", "partial"), (name, result.message)
                plane = data.reshape((-1, ny, nx))[0]
                reference = Cutout2D(plane, position, size, wcs=wcs.celestial, mode="trim")
                stamp = result.hdu.data
                stamp_plane = stamp.reshape((-1,) + stamp.shape[-2:])[0]
                assert np.array_equal(stamp_plane, reference.data, equal_nan=True), name
                assert_wcs_round_trip(result, wcs)
                checked += 1
    assert checked >= 2 * 24


def test_header_records_source_box_request_and_science_keys(real_data):
    path = real_data / "fits/images/gc_2mass_k.fits"
    result = cut(path, 0, Circle(266.4, -28.93, 0.01))
    header = fits.Header.fromstring(result.header_bytes().decode("ascii"))
    source = fits.getheader(path)
    assert header["ORIGFILE"] == header["ORIG_FLE"] == "gc_2mass_k.fits"
    assert header["ORIG_EXT"] == 0
    box = result.pixel_box
    assert (header["CUTX0"], header["CUTX1"]) == (box.x0 + 1, box.x1)
    assert (header["CUTY0"], header["CUTY1"]) == (box.y0 + 1, box.y1)
    assert header["CUTSHAPE"] == "CIRCLE"
    assert "CIRCLE 266.4 -28.93 0.01" in str(header["HISTORY"])
    assert header["BITPIX"] == source["BITPIX"] == 16
    assert header["BSCALE"] == source["BSCALE"] and header["BZERO"] == source["BZERO"]
    assert header["CRPIX1"] == source["CRPIX1"] - box.x0


def test_output_bytes_are_valid_fits(real_data, tmp_path):
    path = real_data / "fits/images/dss.14.29.56-62.41.05.fits.gz"  # non-standard SKEW card
    result = cut(path, 0, CenterSize(217.48365, -62.68516, 20, 20))
    target = result.write(tmp_path / "stamp.fits")
    with fits.open(target) as hdus:
        hdus.verify("exception")
        assert hdus[0].data.shape == (20, 20)


def test_scaled_integers_keep_raw_values_and_blank(tmp_path):
    path = fits_factory.scaled_int_image(tmp_path / "int.fits")
    region_pixel = WCS(fits.getheader(path)).pixel_to_world(3, 4)
    result = cut(path, 0, CenterSize(region_pixel.ra.deg, region_pixel.dec.deg, 20, 20),
                 pad=True)
    assert result.status == "partial"
    raw = fits.getdata(path, do_not_scale_image_data=True)
    box = result.pixel_box
    inside = result.data[-box.y0:, -box.x0:]
    assert np.array_equal(inside, raw[:box.y1, :box.x1])
    assert result.data.dtype == np.dtype(">i2")
    assert np.all(result.data[:-box.y0, :] == -32768)
    with fits.open(result.write(tmp_path / "s.fits"), do_not_scale_image_data=True) as hdus:
        header = hdus[0].header
        assert (header["BSCALE"], header["BZERO"], header["BLANK"]) == (0.5, 100.0, -32768)
        assert np.array_equal(hdus[0].data, result.data)
    with fits.open(tmp_path / "s.fits") as hdus:  # astropy scales and masks as usual
        scaled = hdus[0].data
        assert np.isnan(scaled[0, 0])
        assert scaled[-1, -1] == raw[box.y1 - 1, box.x1 - 1] * 0.5 + 100.0
        assert np.array_equal(result.physical(), scaled, equal_nan=True)


def test_partial_overlap_clips_and_pad_pads_with_nan_moving_crpix(tmp_path):
    path = fits_factory.sip_image(tmp_path / "sip.fits")
    wcs = WCS(fits.getheader(path))
    # off the pixel grid's half-way points: a centre at exactly 1.0 puts the box's edge at
    # -4.0, which rounding of the WCS round trip alone sends to -4 or -3
    corner = wcs.pixel_to_world(1.2, 1.2)
    region = CenterSize(corner.ra.deg, corner.dec.deg, 10, 10)
    clipped = cut(path, 0, region)
    assert clipped.status == "partial" and clipped.data.shape == (7, 7)
    padded = cut(path, 0, region, pad=True)
    assert padded.status == "partial" and padded.data.shape == (10, 10)
    assert np.isnan(padded.data[:3, :]).all() and np.isnan(padded.data[:, :3]).all()
    assert np.array_equal(padded.data[3:, 3:], clipped.data)
    assert_wcs_round_trip(padded, wcs)
    assert_wcs_round_trip(clipped, wcs)
    header = fits.Header.fromstring(padded.header_bytes().decode("ascii"))
    assert header["CUTX0"] == -2  # 1-based: the padding starts left of the image


def test_no_overlap_is_a_status_not_an_exception(tmp_path):
    path = fits_factory.sip_image(tmp_path / "sip.fits")
    for region in (CenterSize(330.0, -40.0, 10, 10), Circle(150.3, 2.2, 0.01),
                   CenterSize(330.0, -2.2, 10, 10)):  # the antipode projects into TAN
        result = cut(path, 0, region)
        assert result.status == "no-overlap" and result.hdu is None and result.data is None
    with pytest.raises(CutoutError):
        result.fits_bytes()


def test_stamp_statuses_are_the_words_users_read(tmp_path):
    """The status enum's values are the manifest's (and the docs') words, and a result's
    status is one of them, shown as that word wherever it is printed."""
    assert [str(s) for s in StampStatus] == ["ok", "partial", "stitched", "no-overlap", "error"]
    assert StampStatus("no-overlap") is StampStatus.NO_OVERLAP
    template = (Path(__file__).parent.parent / "votable_templates" / "manifest.xml").read_text()
    described = template.split('name="status"')[1].split("</DESCRIPTION>")[0]
    docs = (Path(__file__).parent.parent / "docs" / "async.md").read_text()
    for status in StampStatus:
        assert status.value in described and f"`{status.value}`" in docs
    result = cut(fits_factory.sip_image(tmp_path / "sip.fits"), 0,
                 CenterSize(330.0, -40.0, 10, 10))
    assert result.status is StampStatus.NO_OVERLAP
    assert f"{result.status}" == json.loads(json.dumps(result.status)) == "no-overlap"


def test_sip_stamps_land_on_the_requested_position(tmp_path):
    path = fits_factory.sip_image(tmp_path / "sip.fits")
    wcs = WCS(fits.getheader(path))
    target = wcs.pixel_to_world(150, 30)  # far from CRPIX, where SIP matters
    result = cut(path, 0, CenterSize(target.ra.deg, target.dec.deg, 11, 11))
    assert result.status == "ok"
    assert result.data[5, 5] == 30 * 1000 + 150
    stamp_wcs = WCS(result.hdu.header)
    assert stamp_wcs.sip is not None
    assert stamp_wcs.pixel_to_world(5, 5).separation(target).arcsec < 1e-6
    assert_wcs_round_trip(result, wcs)


def test_lookup_table_distortion_travels_with_the_stamp(real_data):
    path = real_data / "fits/images/dist_lookup.fits"
    with fits.open(path) as hdus:
        wcs = source_wcs(hdus, 1)
    target = icrs_of_pixel(wcs, 70, 20)
    result = cut(path, 1, CenterSize(target.ra.deg, target.dec.deg, 16, 16))
    stamp = result.to_hdulist()
    assert [hdu.name for hdu in stamp[1:]] == ["D2IMARR", "WCSDVARR", "WCSDVARR"]
    stamp_wcs = WCS(stamp[0].header, fobj=stamp)
    assert stamp_wcs.cpdis1 is not None and stamp_wcs.det2im1 is not None
    assert_wcs_round_trip(result, wcs)


def test_dss_plate_solution_shifts_cnpix(real_data):
    path = real_data / "fits/images/M6707HH.fits"
    result = cut(path, 0, CenterSize(132.83395, 11.81183, 30, 20))
    header = fits.Header.fromstring(result.header_bytes().decode("ascii"))
    source = fits.getheader(path)
    assert header["CNPIX1"] == source["CNPIX1"] + result.pixel_box.x0
    assert header["CNPIX2"] == source["CNPIX2"] + result.pixel_box.y0
    with fits.open(path) as hdus:
        assert_wcs_round_trip(result, WCS(hdus[0].header))


def test_ra_zero_wrap_and_pole(real_data, tmp_path):
    path = real_data / "fits/derived/ra0wrap_HorseHead.fits"
    with fits.open(path) as hdus:
        wcs = WCS(hdus[0].header)
    for ra in (359.99, 0.0, 0.01):
        result = cut(path, 0, CenterSize(ra, -2.45826, 25, 25))
        assert result.status == "ok"
        centre = WCS(result.hdu.header).pixel_to_world(12, 12)
        assert centre.separation(SkyCoord(ra, -2.45826, unit="deg")).arcsec < 1.5
        assert_wcs_round_trip(result, wcs)
    pole = fits_factory.pole_image(tmp_path / "pole.fits")
    result = cut(pole, 0, Circle(123.0, 89.99, 0.02))
    assert result.status == "ok"
    around_pole = cut(pole, 0, Circle(0.0, 90.0, 0.1))
    assert around_pole.pixel_box.x0 < 100 < around_pole.pixel_box.x1


def test_tile_compressed_reads_match_decompressed_pixels(real_data):
    path = real_data / "fits/images/comp.fits"
    with fits.open(path) as hdus:
        data = hdus[1].data
        wcs = WCS(hdus[1].header)
    target = icrs_of_pixel(wcs, 300, 100)
    result = cut(path, 1, CenterSize(target.ra.deg, target.dec.deg, 40, 30))
    box = result.pixel_box
    assert np.array_equal(result.hdu.data, data[box.y0:box.y1, box.x0:box.x1])
    assert result.hdu.header["BITPIX"] == 16


def test_angular_sizes_use_the_local_pixel_scale(real_data):
    path = real_data / "fits/images/gc_2mass_k.fits"  # 5 arcsec pixels
    result = cut(path, 0, CenterSize(266.4, -28.93, 1.0, 0.5, "arcmin"))
    assert result.data.shape == (6, 12)
    result = cut(path, 0, CenterSize(266.4, -28.93, 60, 60, "arcsec"))
    assert result.data.shape == (12, 12)


def test_unanswerable_hdus_raise_value_errors_that_say_why(real_data):
    region = Circle(85.27, -2.45, 0.01)
    with pytest.raises(ValueError, match="no HDU 5"):
        cut(real_data / "fits/images/HorseHead.fits", 5, region)
    with pytest.raises(ValueError, match="not an image"):
        cut(real_data / "fits/images/HorseHead.fits", 1, region)
    with pytest.raises(CutoutError, match="no celestial WCS"):
        cut(real_data / "fits/images/test0.fits", 1, region)
