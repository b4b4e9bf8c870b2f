"""The one raw -> physical pixel conversion (FITS 4.0 §4.4.2.5), one test per rule."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from vo_service.engine.physical import header_scaling, physical_values


def test_int16_with_bzero_32768_gives_the_unsigned_values() -> None:
    raw = np.array([-32768, -1, 0, 32767], dtype=">i2")
    values = physical_values(raw, bzero=32768.0)
    np.testing.assert_array_equal(values, [0, 32767, 32768, 65535])
    assert values.dtype.kind == "f"


def test_float_data_with_bscale_are_scaled_too() -> None:
    raw = np.array([1.5, -2.0, np.nan], dtype=">f4")
    values = physical_values(raw, bscale=2.0)
    np.testing.assert_array_equal(values, [3.0, -4.0, np.nan])
    assert values.dtype == np.float32


def test_bscale_and_bzero_apply_to_integers_after_blank() -> None:
    raw = np.array([[0, 1], [-32768, 3]], dtype=">i2")
    values = physical_values(raw, bscale=2.0, bzero=10.0, blank=-32768)
    np.testing.assert_array_equal(values, [[10.0, 12.0], [np.nan, 16.0]])


def test_blank_integers_become_nan() -> None:
    raw = np.array([7, 99, 7], dtype=np.int32)
    values = physical_values(raw, blank=99)
    np.testing.assert_array_equal(values, [7.0, np.nan, 7.0])
    assert values.dtype == np.float64


def test_without_scaling_floats_are_the_same_array() -> None:
    raw = np.array([1.5, np.nan], dtype=">f4")
    assert physical_values(raw) is raw


def test_header_scaling_ignores_blank_on_float_data() -> None:
    header = fits.Header({"BITPIX": -32, "BSCALE": 2.0, "BLANK": 5})
    assert header_scaling(header) == {"bscale": 2.0, "bzero": 0.0, "blank": None}
    header = fits.Header({"BITPIX": 16, "BZERO": 32768, "BLANK": -32768})
    assert header_scaling(header) == {"bscale": 1.0, "bzero": 32768.0, "blank": -32768}


def test_a_gallery_thumbnail_of_a_scaled_float_stamp_uses_physical_values(tmp_path) -> None:
    from vo_service.web.gallery import stamp_pixels

    hdu = fits.PrimaryHDU(np.ones((4, 4), dtype=np.float32))
    hdu.header["BSCALE"] = 3.0
    hdu.writeto(tmp_path / "s.fits", output_verify="silentfix")
    with fits.open(tmp_path / "s.fits", do_not_scale_image_data=True) as hdus:
        assert hdus[0].header["BSCALE"] == 3.0  # written raw, scaling kept in the header
    np.testing.assert_array_equal(stamp_pixels((tmp_path / "s.fits").read_bytes()),
                                  np.full((4, 4), 3.0))


def test_a_chosen_float_type_holds_integers_and_floats() -> None:
    raw = np.array([1, 2, -1], dtype=">i2")
    values = physical_values(raw, bscale=0.1, blank=-1, dtype=np.float64)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [0.1, 0.2, np.nan])
    floats = np.array([1.5], dtype=">f4")
    assert physical_values(floats, dtype=np.float64).dtype == np.float64
