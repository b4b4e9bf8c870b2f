"""Filter identification and half-maximum ranges (passbands.py), and real files indexed."""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.io import fits

from vo_service.archive import passbands
from vo_service.archive.index import ArchiveIndex
from vo_service.archive.mapping import MappingError, parse_mapping
from vo_service.archive.passbands import half_maximum_range, identify, passband


def test_half_maximum_edges_are_interpolated_between_samples():
    # peak 1.0 between 500 and 600; half of it at 450 on the way up, and a third of the way
    # from 650 (0.25) back to 600 (1.0) on the way down
    wave = [400.0, 450.0, 500.0, 600.0, 650.0, 700.0]
    response = [0.0, 0.5, 1.0, 1.0, 0.25, 0.0]
    assert half_maximum_range(wave, response) == pytest.approx((450.0, 650.0 - 50.0 / 3))


def test_half_maximum_of_a_curve_still_high_at_the_table_ends():
    assert half_maximum_range([1.0, 2.0, 3.0], [0.9, 1.0, 0.8]) == (1.0, 3.0)


@pytest.mark.parametrize(("band", "instrument", "facility", "header", "expected"), [
    # DECam writes the filter's full name; the first word is the band
    ("r DECam SDSS c0002 6415.0 1480.0", "DECam", "CTIO 4.0-m telescope", {}, "decamDR1-r"),
    ("DES-G", "DECAM", "CTIO-4m Blanco", {}, "decamDR1-g"),
    ("NIR-Y", "NISP", "Euclid", {}, "Euclid-Y"),
    ("VIS", "VIS", "Euclid", {}, "Euclid-VIS"),
    ("g.MP9401", "MegaPrime", "CFHT 3.6m", {}, "cfht_megacam-g"),
    ("Ks", "2MASS", None, {}, "twomass-Ks"),
    ("K", None, "2MASS", {}, "twomass-Ks"),
    ("K", "WFCAM", "UKIRT", {}, "UKIRT-WFCAM-K"),
    ("W2", "WISE", None, {}, "wise2010-W2"),
    (None, "IRAC", "SPITZER", {"CHNLNUM": 2}, "Spitzer-IRAC-ch2"),
    ("IRAC4", None, None, {}, "Spitzer-IRAC-ch4"),
    ("3.6", "IRAC", None, {}, "Spitzer-IRAC-ch1"),
    # photographic plates: glass + emulsion, emulsion alone, or the survey's name
    ("OG590", "Photographic Plate", "UK Schmidt", {"EMULSION": "IIIaF"}, "IIIaF+OG590"),
    ("IIIaJ", None, None, {}, "IIIaJ+GG395"),
    ("GG385", None, "Palomar 48-inch Schmidt", {"EMULSION": "IIIa-J"}, "IIIaJ+GG385"),
    (None, None, None, {"SURVEY": "POSS-II F"}, "IIIaF+RG610"),
    # a band letter alone: the system it usually means; case tells SDSS r from Bessell R
    ("g", None, "2.5m", {}, "sdss2010-g"),
    ("r", None, None, {}, "sdss2010-r"),
    ("R", "PTF/MOSAIC", "P48", {}, "bessell-R"),
    ("ks", None, None, {}, "twomass-Ks"),
    ("B", "Apogee Alta", None, {}, "bessell-B"),
    # nothing known: no range rather than a guess
    ("F673N", "WFPC2", None, {}, None),
    ("Halpha", None, None, {}, None),
    (None, None, None, {}, None),
])
def test_identify_filters_from_band_instrument_and_telescope(band, instrument, facility,
                                                             header, expected):
    assert identify(band, instrument, facility, header.get) == expected
    if expected is not None:
        band_range = passband(expected)
        assert 0 < band_range.em_min < band_range.em_max < 1e-4


def test_every_name_identify_can_return_has_a_range():
    names = [*passbands.GENERIC.values(), *passbands.HAND_TABLE,
             *passbands.SURVEY_PLATES.values(),
             *(f"{e}+{g}" for g, e in passbands.DEFAULT_EMULSION.items())]
    for name in names:
        assert passbands.is_known(name), name
        assert passband(name).em_res_power > 1, name
    assert not passbands.is_known("decamDR1-q") and not passbands.is_known("nonsense")
    with pytest.raises(KeyError):
        passband("nonsense")


def test_curves_give_the_published_half_maximum_ranges():
    sdss_r = passband("sdss2010-r")  # SDSS r: ~560-675 nm at half maximum
    assert (sdss_r.em_min, sdss_r.em_max) == pytest.approx((559.7e-9, 674.9e-9), abs=0.1e-9)
    vis = passband("Euclid-VIS")
    assert (vis.em_min, vis.em_max) == pytest.approx((541.6e-9, 924.4e-9), abs=0.1e-9)
    assert vis.em_res_power == pytest.approx(733.0 / 382.8, rel=1e-3)


def test_mapping_curves_and_errors():
    mapping = parse_mapping('''
        [keywords]
        band = "FILTER"
        [bands.WIDE]
        curve = "Euclid-VIS"
        [[rules]]
        pattern = '^odd/'
        em_min = 1e-6
        em_max = 2e-6
    ''')
    assert mapping.assign("x/a.fits", {"FILTER": "WIDE"}.get).band_range.em_min == \
        pytest.approx(541.6e-9, abs=0.1e-9)
    # a rule's range beats the band's own, and the identified one
    for band in ("WIDE", "r"):
        odd = mapping.assign("odd/a.fits", {"FILTER": band}.get).band_range
        assert (odd.em_min, odd.em_max) == (1e-6, 2e-6)
    with pytest.raises(MappingError, match="unknown filter curve 'sdss-r'"):
        parse_mapping('[bands.r]\ncurve = "sdss-r"\n')
    with pytest.raises(MappingError, match="a curve or numbers"):
        parse_mapping("[[rules]]\npattern = 'x'\nem_min = 1e-6\n")


# Real files: the filter their headers name, and the range its curve gives (nm).
REAL_RANGES_NM = {
    "images/HorseHead.fits": (590.0, 690.0),  # FILTER OG590, EMULSION IIIaF (SERC-ER)
    "images/reprojected_sdss_g.fits": (407.0, 533.1),  # FILTER g, TELESCOP 2.5m (SDSS)
    "images/cadc_megaprime_sa110.fits": (398.4, 552.1),  # FILTER g.MP9401, MegaPrime
    "images/sip-wcs.fits": (388.5, 483.2),  # FILTER B
    "images/gc_2mass_k.fits": (2022.6, 2301.8),  # BAND K (2MASS Ks)
    "images/spitzer_example_image.fits": (3997.6, 5007.3),  # INSTRUME IRAC, CHNLNUM 2
    "images/ukidss_wfcam_M1.fits": (2029.1, 2381.3),  # FILTER K, INSTRUME WFCAM
    "images/gc_msx_e.fits": (21340.0, 21340.0),  # WAVELENG 2.134E-05 (metres)
    "images/gc_bolocam_gps.fits": (1.12e6, 1.12e6),  # WAVELENG 1.12 / mm (...)
}


def test_real_files_get_the_range_of_their_filter(real_data: Path, tmp_path: Path):
    index = ArchiveIndex(tmp_path / "index.sqlite")
    assert index.update([real_data / "fits"]).failed == []
    for relative, (low, high) in REAL_RANGES_NM.items():
        (record,) = [r for r in index.records(path=real_data / "fits" / relative)]
        assert (record.em_min * 1e9, record.em_max * 1e9) == pytest.approx(
            (low, high), abs=0.1), relative
    horsehead = index.records(path=real_data / "fits/images/HorseHead.fits")[0]
    assert fits.getheader(horsehead.path)["FILTER"] == "OG590"
    assert horsehead.band == "OG590" and horsehead.em_res_power == pytest.approx(6.4)
