"""Stamp headers from the template (engine/writing.py), one test per header rule: what
astropy reads back from the bytes a stamp is written with."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from tests import fits_factory
from vo_service.engine.api import cut
from vo_service.engine.writing import StampHeader, card, hdu_bytes, shifted_lookup_bytes
from vo_service.shapes import CenterSize

warnings.simplefilter("ignore", FITSFixedWarning)

EUCLID_NAME = ("EUC_MER_BGSUB-MOSAIC-VIS_TILE102018211-ACBD03_20241018T142710.276694Z"
               "_00.00.fits")
BOX = ((30, 50), (20, 35))  # 0-based, half-open: x 30..49, y 20..34


def source_header(**cards: object) -> fits.Header:
    header = fits_factory.celestial_header(sip=True)
    header.insert(0, ("SIMPLE", True))
    header.insert(1, ("BITPIX", -32))
    header.insert(2, ("NAXIS", 2))
    header.insert(3, ("NAXIS1", 200))
    header.insert(4, ("NAXIS2", 160))
    for key, value in cards.items():
        header[key] = value
    return header


def render(header: fits.Header, ranges=BOX, origfile: str = "source.fits",
           **options) -> fits.Header:
    template = StampHeader(header, origfile=origfile, orig_ext=options.pop("orig_ext", 0),
                           data_bitpix=options.pop("data_bitpix", None))
    text = template.render(ranges, **options).decode("ascii")
    assert len(text) % 2880 == 0
    return fits.Header.fromstring(text)


def test_crpix_of_every_wcs_shifts_by_the_box_start():
    header = source_header(CRPIX1A=10.0, CRPIX2A=-4.5, CTYPE1A="RA---TAN", CTYPE2A="DEC--TAN")
    stamp = render(header)
    assert stamp["CRPIX1"] == header["CRPIX1"] - 30
    assert stamp["CRPIX2"] == header["CRPIX2"] - 20
    assert (stamp["CRPIX1A"], stamp["CRPIX2A"]) == (10.0 - 30, -4.5 - 20)


def test_missing_crpix_counts_as_zero_and_still_shifts():
    header = source_header()
    del header["CRPIX2"]
    assert render(header)["CRPIX2"] == -20


def test_iraf_ltv_shifts_by_the_box_start_times_ltm():
    header = source_header(LTV1=5.0, LTV2=-3.0, LTM1_1=0.5, LTM2_2=1.0)
    stamp = render(header)
    assert (stamp["LTV1"], stamp["LTV2"]) == (5.0 - 0.5 * 30, -3.0 - 20)


def test_sip_coefficients_are_kept_and_map_the_same_sky():
    header = source_header()
    stamp = render(header)
    assert all(stamp[key] == header[key] for key in ("A_ORDER", "A_0_2", "B_2_0"))
    source_wcs, stamp_wcs = WCS(header), WCS(stamp)
    assert stamp_wcs.sip is not None
    xs, ys = np.array([0.0, 19, 0, 19]), np.array([0.0, 0, 14, 14])
    assert np.allclose(stamp_wcs.all_pix2world(xs, ys, 0),
                       source_wcs.all_pix2world(xs + 30, ys + 20, 0), rtol=0, atol=1e-10)


def test_lookup_table_records_renumber_their_extver_and_tables_move_with_the_box():
    header = source_header()
    header["CPDIS1"] = ("LOOKUP", "distortion type")
    header["DP1"] = ("EXTVER: 2", "version of the WCSDVARR table")
    stamp = render(header, extver_offset=3)
    assert stamp["DP1.EXTVER"] == 5 and stamp.comments["DP1"] == "version of the WCSDVARR table"
    table = fits.ImageHDU(np.zeros((4, 4), np.float32), name="WCSDVARR")
    table.header["EXTVER"] = 2
    table.header["CRVAL1"], table.header["CRVAL2"] = 0.0, 0.0
    moved = fits.HDUList.fromstring(fits.PrimaryHDU().header.tostring().encode()
                                    + shifted_lookup_bytes([table], (30, 20), 3))[1]
    assert (moved.header["CRVAL1"], moved.header["CRVAL2"], moved.header["EXTVER"]) == (
        -30.0, -20.0, 5)


def test_dss_cnpix_adds_the_box_start():
    stamp = render(source_header(CNPIX1=1000.0, CNPIX2=2000.0))
    assert (stamp["CNPIX1"], stamp["CNPIX2"]) == (1030.0, 2020.0)


def test_integer_bitpix_bscale_bzero_blank_are_copied():
    header = source_header(BITPIX=16, BSCALE=0.5, BZERO=100.0, BLANK=-32768)
    stamp = render(header)
    assert (stamp["BITPIX"], stamp["BSCALE"], stamp["BZERO"], stamp["BLANK"]) == (
        16, 0.5, 100.0, -32768)


def test_blank_is_dropped_for_floats_and_scaling_for_decoded_quantized_pixels():
    assert "BLANK" not in render(source_header(BLANK=-1))
    decoded = render(source_header(BITPIX=32, BSCALE=2.0, BZERO=5.0, BLANK=-99),
                     data_bitpix=-32)
    assert decoded["BITPIX"] == -32
    assert not {"BSCALE", "BZERO", "BLANK"} & set(decoded)


def test_padding_blank_is_added_when_the_source_has_none():
    stamp = render(source_header(BITPIX=16), blank=-32768)
    assert stamp["BLANK"] == -32768


def test_structural_and_checksum_cards_are_rewritten_not_copied():
    header = source_header(CHECKSUM="abc", DATASUM="1", EXTEND=True)
    stamp = render(header, ranges=((0, 7), (0, 5)))
    assert (stamp["NAXIS"], stamp["NAXIS1"], stamp["NAXIS2"]) == (2, 7, 5)
    assert "CHECKSUM" not in stamp and "DATASUM" not in stamp
    extension = render(header, primary=False, extname="STAMP3")
    assert extension["XTENSION"] == "IMAGE" and extension["EXTNAME"] == "STAMP3"


def test_provenance_origfile_orig_ext_and_one_based_cut_box():
    stamp = render(source_header(), origfile="tile.fits", orig_ext=2,
                   ranges=((30, 50), (20, 35), (3, 5)), shape_name="CIRCLE")
    assert stamp["ORIGFILE"] == stamp["ORIG_FLE"] == "tile.fits"
    assert stamp["ORIG_EXT"] == 2
    assert [stamp[f"CUT{axis}{end}"] for axis in "XYZ" for end in "01"] == [
        31, 50, 21, 35, 4, 5]
    assert stamp["CUTSHAPE"] == "CIRCLE"


def test_history_holds_the_whole_request_over_several_cards():
    request = "POLYGON " + " ".join(f"{150 + k / 1000:.6f} {2 + k / 1000:.6f}"
                                    for k in range(12))
    stamp = render(source_header(), request=request)
    history = stamp["HISTORY"]
    assert len(history) > 1
    assert "".join(history) == f"vo-service cutout: {request}"


def test_long_string_values_continue_instead_of_being_cut():
    header = source_header(OBJECT="a field with a rather long descriptive name " * 3)
    stamp = render(header, origfile=EUCLID_NAME)
    assert stamp["ORIGFILE"] == stamp["ORIG_FLE"] == EUCLID_NAME
    assert stamp.comments["ORIGFILE"] == "source file of the cutout"
    assert stamp["OBJECT"] == header["OBJECT"]
    assert len(card("ORIGFILE", EUCLID_NAME)) % 80 == 0
    assert card("CUTSHAPE", "CIRCLE") == f"{'CUTSHAPE' :<8}= 'CIRCLE  '".ljust(80)


def test_long_string_with_quotes_and_non_ascii_survives_as_valid_fits():
    value = "it's a file named " + "ü" * 3 + "x" * 70
    header = fits.Header.fromstring(card("ORIGFILE", value, "é") + "END".ljust(80))
    assert header["ORIGFILE"] == value.replace("ü", "?")


def test_stamp_of_a_file_with_an_80_character_name_keeps_origfile_whole(tmp_path):
    assert len(EUCLID_NAME) >= 80
    path = fits_factory.sip_image(tmp_path / EUCLID_NAME)
    target = WCS(fits.getheader(path)).pixel_to_world(100, 80)
    result = cut(path, 0, CenterSize(target.ra.deg, target.dec.deg, 11, 11))
    with fits.open(result.write(tmp_path / "stamp.fits")) as hdus:
        hdus.verify("exception")
        assert hdus[0].header["ORIGFILE"] == hdus[0].header["ORIG_FLE"] == EUCLID_NAME
        assert hdus[0].header["CUTX0"] == result.pixel_box.x0 + 1
        assert np.array_equal(hdus[0].data, result.data)


@pytest.mark.parametrize("dtype", [">i2", ">f4"])
def test_hdu_bytes_are_one_readable_hdu(dtype):
    header = source_header(BITPIX=16 if dtype == ">i2" else -32)
    data = np.arange(15 * 20, dtype=dtype).reshape(15, 20)
    head = StampHeader(header, origfile="s.fits", orig_ext=0).render(BOX)
    with fits.HDUList.fromstring(hdu_bytes(head, data)) as hdus:
        hdus.verify("exception")
        assert np.array_equal(hdus[0].data, data)
