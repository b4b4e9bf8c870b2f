"""The archive mapping (TOML): precedence of rules, headers and defaults; named bands; errors."""

from __future__ import annotations

import pytest

from vo_service.archive.mapping import MappingError, load_mapping, parse_mapping

EUCLID = "euclid/TILE5/EUC_MER_BGSUB-MOSAIC-NIR-J_TILE5.fits"


def getter(values: dict[str, object]):
    return lambda key: values.get(key)


def test_default_mapping_reads_euclid_names_and_headers():
    mapping = load_mapping()
    assigned = mapping.assign(EUCLID, getter({"OBS_COLL": "EUCLID-DEMO", "INSTRUME": "NISP",
                                              "TELESCOP": "Euclid"}))
    assert (assigned.collection, assigned.band, assigned.product_type, assigned.tile) == (
        "EUCLID-DEMO", "NIR-J", "BGSUB", "5")
    assert (assigned.instrument, assigned.facility, assigned.calib_level) == ("NISP", "Euclid", 3)
    # the half-maximum range of speclite's Euclid NISP J curve
    assert (assigned.band_range.em_min, assigned.band_range.em_max) == pytest.approx(
        (1167.0e-9, 1572.3e-9), abs=0.1e-9)


def test_fallbacks_for_generic_files():
    mapping = load_mapping()
    plain = mapping.assign("survey2/night1/img.fits", getter({"FILTER": "ks"}))
    assert (plain.collection, plain.product_type, plain.calib_level) == ("survey2", "SCIENCE", 2)
    assert plain.band == "ks" and plain.band_range.name == "twomass-Ks"  # identified
    top = mapping.assign("img.fits", getter({}))
    assert top.collection == "" and top.band_range is None


def test_hdu_header_beats_file_name_beats_primary_header():
    mapping = load_mapping()
    name = "m/EUC_MER_MEF-MOSAIC-VIS_TILE9.fits"
    extension = mapping.assign(name, getter({"PRODTYPE": "RMS"}),
                               getter({"PRODTYPE": "ALL", "INSTRUME": "VIS"}))
    assert (extension.product_type, extension.band, extension.instrument) == ("RMS", "VIS",
                                                                              "VIS")
    no_own = mapping.assign(name, getter({}), getter({"PRODTYPE": "ALL"}))
    assert no_own.product_type == "MEF"


def test_rule_values_win_and_blank_headers_are_absent():
    mapping = parse_mapping('''
        [keywords]
        instrument = "INSTRUME"
        [[rules]]
        pattern = '^raw/(?P<instrument>[a-z]+)_'
        collection = "RAW"
        calib_level = 0
    ''')
    assigned = mapping.assign("raw/cam_001.fits", getter({"INSTRUME": "  "}))
    assert (assigned.collection, assigned.instrument, assigned.calib_level) == ("RAW", "cam", 0)
    assert mapping.assign("raw/cam_1.fits", getter({"INSTRUME": "X"})).instrument == "X"


@pytest.mark.parametrize(("text", "message"), [
    ("[[rules]]\nname = 'x'\n", "no 'pattern'"),
    ("[[rules]]\npattern = '('\n", "pattern"),
    ("[[rules]]\npattern = 'a'\ncolour = 'red'\n", "unknown keys"),
    ("[keywords]\ncolour = ['C']\n", "not one of"),
    ("[bands.X]\nem_min = 2e-7\n", "em_min, em_max"),
    ("[bands.X]\nem_min = 9e-7\nem_max = 2e-7\n", "em_min < em_max"),
    ("this is = = not toml", "not valid TOML"),
])
def test_mapping_errors_say_what_to_fix(text, message):
    with pytest.raises(MappingError, match=message):
        parse_mapping(text)


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match="cannot read mapping file"):
        load_mapping(tmp_path / "absent.toml")
