"""SIA BAND over images whose range comes from their filter, and names in any case, through
the real server with pyvo and plain HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pyvo
from server import LiveServer, assert_valid_votable

FORNAX = (52.93, -28.09)  # the demo archive's main field
RED = 6e-7  # 600 nm: in VIS, DES r, SERC-ER plates; not in g, NIR or K


def rows(server: LiveServer, *pairs: tuple[str, str]):  # noqa: ANN201
    response = httpx.get(server.url("query"), params=list(pairs), timeout=60)
    assert response.status_code == 200, response.text
    return assert_valid_votable(response.content).get_first_table().to_table()


def test_band_at_600_nm_finds_the_vis_and_r_band_demo_images(live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(live_server.base_url)
    at_point = service.search(pos=(*FORNAX, 0.01), band=RED).to_table()  # a DALI scalar
    around = service.search(pos=(*FORNAX, 0.01), band=(5.9e-7, 6.1e-7)).to_table()
    assert set(at_point["band"]) == set(around["band"]) == {"VIS", "DES-R"}
    assert all(at_point["em_min"] <= RED) and all(at_point["em_max"] >= RED)
    assert all(at_point["em_res_power"] > 1)
    # the scalar spelled by hand, as a client without pyvo sends it
    assert set(rows(live_server, ("BAND", "6e-7"))["band"]) == {"VIS", "DES-R"}


def test_band_finds_real_images_by_their_filter(real_live_server: LiveServer) -> None:
    red = rows(real_live_server, ("BAND", str(RED)))
    assert {"HorseHead", "ra0wrap_HorseHead"} <= set(red["obs_id"])  # FILTER OG590
    assert "reprojected_sdss_g" not in set(red["obs_id"])
    infrared = rows(real_live_server, ("BAND", "4.5e-6"))  # IRAC channel 2 (CHNLNUM 2)
    assert set(infrared["obs_id"]) == {"spitzer_example_image"}
    sdss_g = rows(real_live_server, ("BAND", "4.5e-7 4.6e-7"))
    assert {"reprojected_sdss_g", "cadc_megaprime_sa110", "sip-wcs"} <= set(sdss_g["obs_id"])


def test_instrument_facility_collection_and_target_match_in_any_case(
        real_live_server: LiveServer) -> None:
    assert set(rows(real_live_server, ("INSTRUMENT", "irac"))["obs_id"]) == {
        "spitzer_example_image"}
    assert set(rows(real_live_server, ("FACILITY", "ukirt"),
                    ("INSTRUMENT", "WfCam"))["obs_id"]) == {"ukidss_wfcam_M1"}
    assert set(rows(real_live_server, ("COLLECTION", "CUBES"))["obs_collection"]) == {"cubes"}
    assert len(rows(real_live_server, ("TARGET", "j105007+304037"))) == 1
    # names that are not typed by people keep their exact case
    assert len(rows(real_live_server, ("DPTYPE", "IMAGE"))) == 0
    pyvo_rows = pyvo.dal.SIA2Service(real_live_server.base_url).search(
        instrument="megaprime").to_table()
    assert list(pyvo_rows["instrument_name"]) == ["MegaPrime"]


def test_mapping_rule_overrides_the_filter_range(real_data: Path, tmp_path: Path,
                                                 live_server_factory) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        '[keywords]\nband = ["FILTER", "BAND"]\ninstrument = ["INSTRUME"]\n'
        'facility = ["TELESCOP"]\n'
        '[[rules]]\nname = "DSS red plates seen as z"\npattern = "HorseHead"\n'
        'curve = "sdss2010-z"\n'
        '[bands.K]\nem_min = 1.9e-6\nem_max = 2.5e-6\n')
    server = live_server_factory(real_data / "fits", mapping_file=mapping)
    red = set(rows(server, ("BAND", str(RED)))["obs_id"])
    assert "HorseHead" not in red and "ra0wrap_HorseHead" not in red
    z_band = set(rows(server, ("BAND", "9e-7"))["obs_id"])
    assert {"HorseHead", "ra0wrap_HorseHead"} <= z_band
    # the [bands] entry wins over the identified 2MASS Ks / WFCAM K curves
    wide_k = rows(server, ("BAND", "1.95e-6"))
    assert {"gc_2mass_k", "ukidss_wfcam_M1"} <= set(wide_k["obs_id"])
    assert set(wide_k["em_min"]) == {1.9e-6}
