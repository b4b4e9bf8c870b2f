"""SIA 2.0 {query} through a real server, with pyvo and plain HTTP."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest
import pyvo
from server import LiveServer, assert_valid_votable, query_status
from stilts_runner import votlint

FORNAX = (52.93, -28.09)  # the demo archive's main field (three adjacent tiles)
DATALINK = "application/x-votable+xml;content=datalink"
OBSCORE_COLUMNS = [
    "dataproduct_type", "calib_level", "obs_collection", "obs_id", "obs_publisher_did",
    "access_url", "access_format", "access_estsize", "target_name", "s_ra", "s_dec", "s_fov",
    "s_region", "s_resolution", "s_xel1", "s_xel2", "t_min", "t_max", "t_exptime", "t_resolution",
    "t_xel", "em_min", "em_max", "em_res_power", "em_xel", "o_ucd", "pol_states", "pol_xel",
    "facility_name", "instrument_name",
]


def query(server: LiveServer, *pairs: tuple[str, str], method: str = "GET") -> httpx.Response:
    if method == "POST":
        form: dict[str, list[str]] = {}
        for name, value in pairs:
            form.setdefault(name, []).append(value)
        return httpx.post(server.url("query"), data=form, timeout=60)
    return httpx.get(server.url("query"), params=list(pairs), timeout=60)


def rows_of(response: httpx.Response):  # noqa: ANN201
    votable = assert_valid_votable(response.content)
    return votable, votable.resources[0].tables[0].to_table()


def test_pyvo_finds_the_demo_images_by_position(live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(live_server.base_url)
    results = service.search(pos=(*FORNAX, 0.01))
    table = results.to_table()
    assert len(table) >= 32  # 8 bands x 4 products over the central tile at least
    assert set(table["obs_collection"]) == {"EUCLID-DEMO"}
    assert set(table["access_format"]) == {DATALINK}
    assert all(url.startswith(live_server.url("links?ID=")) for url in table["access_url"])
    assert {"VIS", "NIR-H", "DES-G"} <= set(table["band"])
    assert {"BGSUB", "RMS", "FLAG", "BGMOD"} <= set(table["product_type"])
    # every footprint really meets the search circle: its centre is within a tile of it
    assert np.all(np.abs(table["s_dec"] - FORNAX[1]) < 0.1)


def test_response_carries_every_obscore_column_with_metadata(live_server: LiveServer) -> None:
    response = query(live_server, ("POS", f"CIRCLE {FORNAX[0]} {FORNAX[1]} 0.01"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-votable+xml")
    votable, table = rows_of(response)
    fields = {f.name: f for f in votable.resources[0].tables[0].fields}
    for name in OBSCORE_COLUMNS:
        assert name in fields, name
        assert fields[name].utype.startswith("obscore:"), name
        assert fields[name].ucd, name
    assert fields["s_ra"].unit == "deg" and fields["em_min"].unit == "m"
    assert fields["access_estsize"].datatype == "long"
    assert fields["s_region"].xtype == "polygon"
    assert {"band", "product_type"} <= set(fields)
    assert query_status(votable)[0] == "OK"
    infos = {i.name: i.value for i in votable.resources[0].infos}
    assert infos["standardID"] == "ivo://ivoa.net/std/SIA#query-2.0"
    region = table["s_region"][0]
    assert len(region) >= 6 and len(region) % 2 == 0


def test_generic_soda_descriptor_and_self_descriptor(live_server: LiveServer) -> None:
    votable, _ = rows_of(query(live_server, ("POS", f"CIRCLE {FORNAX[0]} {FORNAX[1]} 0.01")))
    meta = [r for r in votable.resources if r.type == "meta"]
    services = [r for r in meta if r.utype == "adhoc:service"]
    assert len(services) == 2
    links = next(r for r in services if r.ID == "links-generic")
    assert {p.name: p.value for p in links.params}["accessURL"] == live_server.url("links")
    assert links.groups[0].entries[0].ref == "obs_publisher_did"
    soda = [r for r in services if r.ID == "soda-generic"]
    params = {p.name: p for p in soda[0].params}
    assert params["standardID"].value == "ivo://ivoa.net/std/SODA#sync-1.0"
    assert params["accessURL"].value == live_server.url("sync")
    inputs = {p.name: p for p in soda[0].groups[0].entries}
    assert inputs["ID"].ref == "obs_publisher_did"
    assert votable.get_field_by_id("obs_publisher_did").name == "obs_publisher_did"
    assert {"POS", "CIRCLE", "POLYGON", "BAND", "TIME"} <= set(inputs)
    assert [value for _, value in inputs["RESPONSEFORMAT"].values.options] == \
        ["application/fits", "image/png", "image/jpeg"]
    this = [r for r in meta if r.utype == "adhoc:this"]
    assert len(this) == 1
    this_inputs = {p.name: p for p in this[0].groups[0].entries}
    assert {"POS", "BAND", "BANDNAME", "PRODUCTTYPE", "MAXREC"} <= set(this_inputs)
    assert "EUCLID-DEMO" in this_inputs["COLLECTION"].values.options[0]


def test_votlint_finds_nothing_to_warn_about(live_server: LiveServer, stilts: str,
                                             tmp_path) -> None:  # noqa: ANN001
    """Results and the three descriptors: valid, every RESOURCE name used once."""
    document = tmp_path / "sia.xml"
    answer = query(live_server, ("POS", f"CIRCLE {FORNAX[0]} {FORNAX[1]} 0.01"))
    document.write_bytes(answer.content)
    assert votlint(stilts, document) == []


def test_pyvo_fetches_the_links_of_many_rows_at_once(live_server: LiveServer) -> None:
    results = pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(*FORNAX, 0.005), BANDNAME="DES-R")
    assert len(results) >= 4
    seen = set()
    for datalinks in results.iter_datalinks():
        this = list(datalinks.bysemantics("#this", include_narrower=False))
        assert len(this) == 1
        seen.add(str(this[0]["ID"]))
    assert seen == {str(did) for did in results.to_table()["obs_publisher_did"]}


def test_band_selects_by_wavelength(live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(live_server.base_url)
    table = service.search(pos=(*FORNAX, 0.01), band=(1.6e-6, 1.7e-6)).to_table()
    assert len(table) > 0
    assert np.all(table["em_min"] <= 1.7e-6) and np.all(table["em_max"] >= 1.6e-6)
    assert "VIS" not in set(table["band"])


def test_same_name_or_different_names_and(live_server: LiveServer) -> None:
    _, vis = rows_of(query(live_server, ("BANDNAME", "VIS"), ("PRODUCTTYPE", "BGSUB")))
    assert len(vis) > 0
    assert set(vis["band"]) == {"VIS"} and set(vis["product_type"]) == {"BGSUB"}
    _, either = rows_of(query(live_server, ("BANDNAME", "VIS"), ("BANDNAME", "NIR-Y"),
                              ("PRODUCTTYPE", "RMS")))
    assert set(either["band"]) == {"VIS", "NIR-Y"} and set(either["product_type"]) == {"RMS"}


def test_string_and_numeric_filters(live_server: LiveServer) -> None:
    _, cubes = rows_of(query(live_server, ("DPTYPE", "cube")))
    assert len(cubes) >= 1 and set(cubes["dataproduct_type"]) == {"cube"}
    _, decam = rows_of(query(live_server, ("INSTRUMENT", "DECAM"), ("MAXREC", "1000")))
    assert len(decam) > 0 and set(decam["instrument_name"]) == {"DECAM"}
    _, lower = rows_of(query(live_server, ("INSTRUMENT", "decam"), ("MAXREC", "1000")))
    assert len(lower) == len(decam)  # instrument names match in any case
    _, long_exposures = rows_of(query(live_server, ("EXPTIME", "2000 +Inf")))
    assert len(long_exposures) > 0 and np.all(long_exposures["t_exptime"] >= 2000)
    _, calibrated = rows_of(query(live_server, ("CALIB", "2"), ("CALIB", "3"),
                                  ("COLLECTION", "EUCLID-DEMO"), ("FACILITY", "Euclid"),
                                  ("FORMAT", DATALINK), ("FORMAT", "application/fits")))
    assert len(calibrated) > 0


def test_format_matches_the_access_format_the_rows_show(live_server: LiveServer) -> None:
    """docs/protocols.md: FORMAT is the rows' access_format, the DataLink MIME type; pyvo's
    ``res_format=`` sends it."""
    service = pyvo.dal.SIA2Service(live_server.base_url)
    every = service.search(pos=(*FORNAX, 0.005)).to_table()
    assert len(every) >= 4
    for spelling in (DATALINK, "application/x-votable+xml; content=datalink"):
        found = service.search(pos=(*FORNAX, 0.005), res_format=spelling).to_table()
        assert sorted(found["obs_publisher_did"]) == sorted(every["obs_publisher_did"])
        assert set(found["access_format"]) == {DATALINK}
    for other in ("application/fits", "image/png"):
        assert len(service.search(pos=(*FORNAX, 0.005), res_format=other)) == 0
    votable, _ = rows_of(query(live_server, ("MAXREC", "0")))
    this = next(r for r in votable.resources if r.utype == "adhoc:this")
    format_param = next(p for p in this.groups[0].entries if p.name == "FORMAT")
    assert [value for _, value in format_param.values.options] == [DATALINK]


@pytest.mark.parametrize(("pos", "message"), [
    ("CIRCLE 400 0 1", "UsageError: POS CIRCLE: RA 400.0 is outside [0, 360] degrees"),
    ("RANGE 10 20 5 1", "UsageError: POS RANGE: the lower Dec limit exceeds the upper one"),
])
def test_pyvo_shows_errors_with_each_label_once(live_server: LiveServer, pos: str,
                                                message: str) -> None:
    with pytest.raises(pyvo.dal.DALQueryError) as raised:
        pyvo.dal.SIA2Service(live_server.base_url).search(POS=pos)
    assert str(raised.value) == message  # not "POS CIRCLE: CIRCLE: RA 400 ..."


def test_time_finds_one_epoch(live_server: LiveServer) -> None:
    _, epochs = rows_of(query(live_server, ("TARGET", "EDF-FORNAX-VAR")))
    target_rows = len(epochs)
    _, all_epoch_rows = rows_of(query(live_server, ("POS", "CIRCLE 53.3 -27.85 0.005"),
                                      ("BANDNAME", "VIS"), ("PRODUCTTYPE", "BGSUB")))
    assert len(all_epoch_rows) >= 4 or target_rows >= 4
    table = all_epoch_rows
    first = float(np.min(table["t_min"]))
    _, one = rows_of(query(live_server, ("POS", "CIRCLE 53.3 -27.85 0.005"),
                           ("BANDNAME", "VIS"), ("PRODUCTTYPE", "BGSUB"),
                           ("TIME", f"{first - 0.01} {first + 0.01}")))
    assert len(one) == 1


def test_id_is_case_insensitive(live_server: LiveServer) -> None:
    _, some = rows_of(query(live_server, ("MAXREC", "2")))
    did = str(some["obs_publisher_did"][0])
    _, found = rows_of(query(live_server, ("ID", did.upper())))
    assert list(found["obs_publisher_did"]) == [did]


def test_maxrec_zero_gives_metadata_and_overflow(live_server: LiveServer) -> None:
    votable, table = rows_of(query(live_server, ("MAXREC", "0")))
    assert len(table) == 0 and "obs_publisher_did" in table.colnames
    assert query_status(votable)[0] == "OVERFLOW"
    votable, table = rows_of(query(live_server, ("MAXREC", "3"), method="POST"))
    assert len(table) == 3 and query_status(votable)[0] == "OVERFLOW"
    results = pyvo.dal.SIA2Service(live_server.base_url).search(pos=(*FORNAX, 0.01), maxrec=2)
    assert len(results) == 2


def test_range_and_polygon_positions(live_server: LiveServer) -> None:
    ra, dec = FORNAX
    _, by_range = rows_of(query(live_server, ("POS", f"RANGE {ra - 0.01} {ra + 0.01} "
                                                     f"{dec - 0.01} {dec + 0.01}")))
    _, by_polygon = rows_of(query(live_server, (
        "POS", f"polygon {ra - 0.01} {dec - 0.01} {ra + 0.01} {dec - 0.01} {ra} {dec + 0.01}")))
    assert len(by_range) > 0 and len(by_polygon) > 0
    _, nowhere = rows_of(query(live_server, ("POS", "CIRCLE 200 60 0.01")))
    assert len(nowhere) == 0
    _, wrap = rows_of(query(live_server, ("POS", "RANGE 359.99 0.01 1.19 1.21")))
    assert len(wrap) > 0  # the tile straddling RA = 0


@pytest.mark.parametrize(("pairs", "fragment"), [
    ((("POS", "CIRCLE 52 -28"),), "3 numbers"),
    ((("POS", "BOX 1 2 3 4"),), "CIRCLE, RANGE or POLYGON"),
    ((("POS", "CIRCLE 52 -28 -1"),), "radius"),
    ((("BAND", "2e-6 1e-6"),), "exceeds"),
    ((("BAND", "nan 1"),), "NaN"),
    ((("MAXREC", "-1"),), "at least 0"),
    ((("MAXREC", "1"), ("MAXREC", "2")), "single-valued"),
    ((("RESPONSEFORMAT", "application/fits"),), "not supported"),
    ((("CALIB", "two"),), "integer"),
])
def test_errors_are_dali_votables(live_server: LiveServer, pairs: tuple, fragment: str) -> None:
    response = query(live_server, *pairs)
    assert response.status_code == 400
    votable = assert_valid_votable(response.content)
    status, text = query_status(votable)
    assert status == "ERROR" and text.startswith("UsageError: ") and fragment in text


@pytest.mark.parametrize(("name", "value", "most"), [
    ("POL", "I", 256), ("BAND", "1e-6 2e-6", 256), ("pos", "CIRCLE 52.9 -28.1 0.01", 64)])
def test_a_parameter_given_too_many_times_is_a_usage_error(live_server: LiveServer,
                                                           name: str, value: str,
                                                           most: int) -> None:
    """OR-ed values are bounded: a thousand of them overflowed SQLite's expression depth
    (a 500), and each POS shape costs a pass over the footprints."""
    within = query(live_server, *[(name, value)] * most, method="POST")
    assert within.status_code == 200, within.text
    response = query(live_server, *[(name, value)] * 1000, method="POST")
    assert response.status_code == 400, response.text
    status, text = query_status(assert_valid_votable(response.content))
    assert status == "ERROR" and "given 1000 times" in text and f"at most {most}" in text


def test_pyvo_raises_the_service_message(live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(live_server.base_url)
    with pytest.raises(pyvo.dal.DALQueryError, match="UsageError: CALIB"):
        service.search(pos=(*FORNAX, 0.01), CALIB="two").to_table()
    # the extension parameters pass through pyvo's custom keywords
    table = service.search(pos=(*FORNAX, 0.01), BANDNAME="NIR-J", PRODUCTTYPE="FLAG").to_table()
    assert len(table) >= 1
    assert set(table["band"]) == {"NIR-J"} and set(table["product_type"]) == {"FLAG"}


def test_real_archive_is_searchable(real_live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(real_live_server.base_url)
    # the Horsehead nebula (DSS2 red plate)
    table = service.search(pos=(85.25, -2.46, 0.05)).to_table()
    assert any("HorseHead" in str(obs_id) for obs_id in table["obs_id"])
    cubes = service.search(data_type="cube").to_table()
    assert len(cubes) >= 2 and set(cubes["dataproduct_type"]) == {"cube"}
    everything = httpx.get(real_live_server.url("query"), params={"MAXREC": "1000"}, timeout=60)
    votable, table = rows_of(everything)
    assert query_status(votable)[0] == "OK" and len(table) >= 15
    # the derived cube has a rest frequency, so its velocity axis has wavelengths
    assert any(math.isfinite(v) for v in cubes["em_min"].filled(np.nan))
