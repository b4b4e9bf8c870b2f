"""TAP 1.1 at <base>/tap through the real server, with real clients (STILTS taplint, pyvo,
astroquery) and plain HTTP (issue 14)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import pyvo
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.table import Table
from lxml import etree
from server import LiveServer, assert_valid_votable, load_schema, query_status, serve_archive
from stilts_runner import run

from vo_service.archive.index import ArchiveIndex

CONE = ("SELECT obs_publisher_did, access_url, access_format, s_region FROM ivoa.obscore "
        "WHERE INTERSECTS(s_region, CIRCLE('ICRS', {ra}, {dec}, 0.02)) = 1")
JOIN = ("SELECT t.id, o.obs_publisher_did, o.access_url FROM tap_upload.t1 AS t "
        "JOIN ivoa.obscore AS o ON CONTAINS(POINT('ICRS', t.ra, t.dec), o.s_region) = 1")


@pytest.fixture(scope="module")
def tap_server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[LiveServer]:
    """A private server: taplint and the async tests create jobs."""
    with serve_archive(demo_archive, tmp_path_factory.mktemp("tap-state")) as server:
        yield server


@pytest.fixture(scope="module")
def index(tap_server: LiveServer) -> ArchiveIndex:
    return ArchiveIndex(tap_server.settings.index_path)


def _tap(server: LiveServer) -> pyvo.dal.TAPService:
    return pyvo.dal.TAPService(server.url("tap"))


def _centre(index: ArchiveIndex) -> tuple[float, float]:
    record = next(r for r in index.records(product_type="BGSUB") if r.s_region)
    return record.s_ra, record.s_dec


def _sync(server: LiveServer, **params: str) -> httpx.Response:
    return httpx.post(server.url("tap/sync"), data={"LANG": "ADQL", **params}, timeout=120)


# --- real clients -----------------------------------------------------------------------


@pytest.mark.slow
def test_taplint_finds_no_errors(tap_server: LiveServer, stilts: str) -> None:
    completed = run(stilts, "taplint", f"tapurl={tap_server.url('tap')}")
    lines = completed.stdout.splitlines()
    totals = next(line for line in lines if line.startswith("Totals:"))
    errors = [line for line in lines if line.startswith("E-")]
    assert "Errors: 0;" in totals, "\n".join(errors)
    print("taplint:", totals)
    print("\n".join(line for line in lines if line.startswith("W-")))


def test_pyvo_sync_cone_finds_what_sia_finds(tap_server: LiveServer,
                                             index: ArchiveIndex) -> None:
    ra, dec = _centre(index)
    rows = _tap(tap_server).search(CONE.format(ra=ra, dec=dec)).to_table()
    sia = pyvo.dal.SIA2Service(tap_server.base_url).search(pos=(ra, dec, 0.02)).to_table()
    wide = {r.obs_publisher_did for r in index.records(wide=1)}
    assert len(rows) > 0
    assert set(rows["obs_publisher_did"]) == set(sia["obs_publisher_did"]) - wide
    assert set(rows["access_format"]) == {"application/x-votable+xml;content=datalink"}
    assert all(url.startswith(f"{tap_server.base_url}/links?ID=") for url in rows["access_url"])
    assert all(region.startswith("Polygon ICRS ") for region in rows["s_region"])


def test_pyvo_async_gives_the_sync_answer(tap_server: LiveServer, index: ArchiveIndex) -> None:
    ra, dec = _centre(index)
    query = CONE.format(ra=ra, dec=dec)
    service = _tap(tap_server)
    job = service.submit_job(query)
    assert job.phase == "PENDING"
    job.run().wait(timeout=120)
    assert job.phase == "COMPLETED"
    assert job.result_uri.endswith("/results/result")
    async_rows = job.fetch_result().to_table()
    sync_rows = service.run_sync(query).to_table()
    assert sorted(async_rows["obs_publisher_did"]) == sorted(sync_rows["obs_publisher_did"])
    assert sorted(service.run_async(query).to_table()["obs_publisher_did"]) == \
        sorted(sync_rows["obs_publisher_did"])


def test_async_bad_adql_ends_the_job_in_error(tap_server: LiveServer) -> None:
    job = _tap(tap_server).submit_job("SELECT nothing FROM ivoa.obscore")  # created: 303
    job.run().wait(timeout=120, phases=("COMPLETED", "ERROR", "ABORTED"))
    assert job.phase == "ERROR"
    error = httpx.get(f"{job.url}/error", timeout=60)
    assert error.status_code == 200
    assert "nothing" in error.text and "line 1" in error.text
    assert httpx.get(f"{job.url}/results/result", timeout=60).status_code == 404


def _targets(index: ArchiveIndex, count: int, seed: int = 1) -> Table:
    """``count`` positions, most inside footprints, some far from everything."""
    rng = np.random.default_rng(seed)
    records = [r for r in index.records() if r.s_region and not r.wide]
    picks = rng.integers(0, len(records), count)
    ra = np.array([records[k].s_ra for k in picks]) + rng.normal(0, 0.01, count)
    dec = np.array([records[k].s_dec for k in picks]) + rng.normal(0, 0.01, count)
    ra[::10] = rng.uniform(0, 360, len(ra[::10]))
    dec[::10] = rng.uniform(-80, 80, len(dec[::10]))
    return Table({"id": np.arange(count), "ra": ra % 360.0, "dec": dec})


def _expected_pairs(index: ArchiveIndex, targets: Table, **filters: str
                    ) -> set[tuple[int, str]]:
    found = index.lookup(np.asarray(targets["ra"]), np.asarray(targets["dec"]), **filters)
    return {(int(targets["id"][p]), r.obs_publisher_did) for p, r in found if not r.wide}


def test_pyvo_upload_join_matches_the_index_lookup(tap_server: LiveServer,
                                                   index: ArchiveIndex) -> None:
    targets = _targets(index, 200)
    rows = _tap(tap_server).search(JOIN, uploads={"t1": targets}).to_table()
    got = {(int(i), str(d)) for i, d in zip(rows["id"], rows["obs_publisher_did"], strict=True)}
    assert got == _expected_pairs(index, targets)
    assert len(got) > 100


@pytest.mark.slow
def test_ten_thousand_target_upload_join(tap_server: LiveServer, index: ArchiveIndex) -> None:
    """The issue's join for 10,000 targets (one product type and instrument, so that the
    answer stays below MAXREC: the demo archive stacks ~30 products on every position)."""
    targets = _targets(index, 10_000, seed=2)
    query = JOIN + " WHERE o.product_type = 'BGSUB' AND o.instrument_name = 'VIS'"
    rows = _tap(tap_server).search(query, uploads={"t1": targets}, maxrec=100_000).to_table()
    got = {(int(i), str(d)) for i, d in zip(rows["id"], rows["obs_publisher_did"], strict=True)}
    assert got == _expected_pairs(index, targets, product_type="BGSUB", instrument="VIS")
    assert len(got) > 5_000


def test_upload_round_trip_keeps_names_types_and_values(tap_server: LiveServer) -> None:
    table = Table({"Name": ["a", "b"], "n": np.array([1, 2], dtype=np.int16),
                   "x y": [0.5, np.nan]})
    rows = _tap(tap_server).search('SELECT * FROM TAP_UPLOAD.up', uploads={"up": table})
    back = rows.to_table()
    assert back.colnames == ["Name", "n", "x y"]
    assert list(back["Name"]) == ["a", "b"]
    assert rows.fieldname_with_ucd is not None  # a real VOTable came back
    assert back["n"].dtype == np.int16
    assert back["x y"][0] == 0.5 and np.ma.is_masked(back["x y"][1])


def test_upload_from_a_url_is_refused_by_default(tap_server: LiveServer) -> None:
    response = _sync(tap_server, QUERY="SELECT * FROM TAP_UPLOAD.t1",
                     UPLOAD="t1,http://127.0.0.1:9/table.xml")
    assert response.status_code == 400
    assert "UPLOAD from a URL is switched off" in response.text


def test_astroquery_tapplus_loads_tables_and_queries(tap_server: LiveServer) -> None:
    from astroquery.utils.tap.core import TapPlus

    tap = TapPlus(url=tap_server.url("tap"), verbose=False)
    names = {table.get_qualified_name().lower() for table in tap.load_tables(verbose=False)}
    assert {"ivoa.obscore", "tap_schema.columns"} <= names
    job = tap.launch_job("SELECT TOP 5 obs_publisher_did, s_ra FROM ivoa.obscore",
                         verbose=False)
    assert len(job.get_results()) == 5


# --- protocol details -------------------------------------------------------------------


@pytest.mark.parametrize(("query", "says"), [
    ("SELECT obs_id FROM ivoa.obscore LIMIT 3", "LIMIT is not ADQL"),
    ("SELECT obs_id FROM ivoa.obscore; SELECT 1 FROM ivoa.obscore", "one statement"),
    ("SELECT nothing FROM ivoa.obscore", "'nothing' is not a column"),
    ("SELECT FOO(s_ra) FROM ivoa.obscore", "unknown function FOO"),
    ("SELECT * FROM ivoa.nothing", "unknown table ivoa.nothing"),
    ("SELECT * FROM sqlite_master", "unknown table"),
    ("DUFF QUERY", "SELECT"),
    ("SELECT POINT('GALACTIC', 1, 2) FROM ivoa.obscore", "coordinate system"),
])
def test_invalid_adql_is_a_dali_error_saying_what_and_where(tap_server: LiveServer,
                                                            query: str, says: str) -> None:
    response = _sync(tap_server, QUERY=query)
    assert response.status_code == 400
    status, text = query_status(assert_valid_votable(response.content))
    assert status == "ERROR"
    assert text.startswith("UsageError: invalid ADQL")
    assert says in text
    if says != "SELECT":
        assert "line 1, column" in text


def test_unknown_language_is_refused(tap_server: LiveServer) -> None:
    response = httpx.get(tap_server.url("tap/sync"), timeout=60,
                         params={"LANG": "OOBLECK", "QUERY": "SELECT 1 FROM ivoa.obscore"})
    assert response.status_code == 400
    assert "LANG 'OOBLECK' is not supported" in response.text


def test_maxrec_overflow_and_metadata_only(tap_server: LiveServer) -> None:
    query = "SELECT obs_publisher_did, calib_level FROM ivoa.obscore"
    cut = _sync(tap_server, QUERY=query, MAXREC="2")
    root = etree.fromstring(cut.content)
    ns = {"v": "http://www.ivoa.net/xml/VOTable/v1.3"}
    after = root.find("v:RESOURCE/v:TABLE", ns).getnext()
    assert after.get("name") == "QUERY_STATUS" and after.get("value") == "OVERFLOW"
    assert len(assert_valid_votable(cut.content).get_first_table().array) == 2
    empty = assert_valid_votable(_sync(tap_server, QUERY=query, MAXREC="0").content)
    table = empty.get_first_table()
    assert [f.name for f in table.fields] == ["obs_publisher_did", "calib_level"]
    assert table.fields[1].datatype == "short"  # typed from TAP_SCHEMA, not SQLite
    assert len(table.array) == 0


@pytest.mark.parametrize("fmt", ["csv", "text/tab-separated-values", "fits", "votable/b2"])
def test_output_formats_carry_the_same_rows(tap_server: LiveServer, fmt: str) -> None:
    query = ("SELECT TOP 7 obs_publisher_did, s_ra, calib_level, COUNT(*) AS n FROM ivoa.obscore "
             "GROUP BY obs_publisher_did, s_ra, calib_level ORDER BY obs_publisher_did")
    reference = parse_single_table(io.BytesIO(_sync(tap_server, QUERY=query).content)
                                   ).to_table()
    response = _sync(tap_server, QUERY=query, RESPONSEFORMAT=fmt)
    assert response.status_code == 200, response.text
    if fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        got = Table.read(response.text, format="ascii.csv")
    elif fmt.startswith("text/tab"):
        got = Table.read(response.text, format="ascii.tab")
    elif fmt == "fits":
        got = Table(fits.open(io.BytesIO(response.content))[1].data)
    else:
        assert b"<BINARY2>" in response.content
        got = parse_single_table(io.BytesIO(response.content)).to_table()
    assert list(got["obs_publisher_did"]) == list(reference["obs_publisher_did"])
    assert np.allclose(got["s_ra"], reference["s_ra"])
    assert list(got["n"]) == [1] * 7


def test_capabilities_declare_tap_with_tapregext(tap_server: LiveServer) -> None:
    ns = {"vosi": "http://www.ivoa.net/xml/VOSICapabilities/v1.0"}
    for path in ("capabilities", "tap/capabilities"):
        root = etree.fromstring(httpx.get(tap_server.url(path), timeout=60).content)
        load_schema("capabilities-bundle.xsd").assertValid(root)
        tap = root.find("capability[@standardID='ivo://ivoa.net/std/TAP']", ns)
        assert tap.find("interface/accessURL").text == tap_server.url("tap")
        versions = [v.text for v in tap.iter("version")]
        assert versions == ["2.0", "2.1"]
    tables = etree.fromstring(httpx.get(tap_server.url("tap/tables"), timeout=60).content)
    load_schema("VOSITables-v1.1.xsd").assertValid(tables)
    names = [n.text for n in tables.iter("name")]
    assert "ivoa.obscore" in names and "tap_schema.key_columns" in names


def test_examples_run(tap_server: LiveServer) -> None:
    page = etree.fromstring(httpx.get(tap_server.url("tap/examples"), timeout=60).content)
    queries = [e.text for e in page.iter() if e.get("property") == "query"]
    assert len(queries) == 2
    for query in queries:
        response = _sync(tap_server, QUERY=query)
        assert response.status_code == 200
        assert len(parse_single_table(io.BytesIO(response.content)).array) > 0


def test_web_page_gives_the_tap_url_and_the_example_queries(tap_server: LiveServer) -> None:
    import html

    page = httpx.get(tap_server.url(""), timeout=60).text
    assert f"<code>{tap_server.url('tap')}</code>" in page
    page = html.unescape(page)
    examples = etree.fromstring(httpx.get(tap_server.url("tap/examples"), timeout=60).content)
    queries = [e.text for e in examples.iter() if e.get("property") == "query"]
    for query in queries:
        assert query in page


@pytest.mark.parametrize("fmt", ["votable", "votable/b2", "csv", "tsv", "fits"])
def test_non_ascii_text_and_geometry_in_every_format(tap_server: LiveServer, fmt: str) -> None:
    response = _sync(tap_server, RESPONSEFORMAT=fmt, QUERY=(
        "SELECT TOP 2 'Ω Cen' AS name, s_region, POINT(s_ra, s_dec) AS p FROM ivoa.obscore"))
    assert response.status_code == 200, response.text
    if fmt.startswith("votable"):
        table = parse_single_table(io.BytesIO(response.content)).to_table()
        assert list(table["name"]) == ["Ω Cen", "Ω Cen"]
        assert table["p"][0].shape == (2,)
    elif fmt == "fits":
        assert fits.open(io.BytesIO(response.content))[1].data["name"][0] == "Ω Cen".encode()
    else:
        assert "Ω Cen" in response.content.decode("utf-8")


# --- values that do not fit their column (found by a hostile test of the service) -----------


def _upload_sync(server: LiveServer, votable: str, query: str, fmt: str) -> httpx.Response:
    return httpx.post(server.url("tap/sync"), timeout=120,
                      data={"LANG": "ADQL", "QUERY": query, "UPLOAD": "t1,param:t1",
                            "RESPONSEFORMAT": fmt},
                      files={"t1": ("t1.xml", votable.encode(), "application/x-votable+xml")})


def _votable(fields: str, rows: str) -> str:
    return ('<?xml version="1.0"?><VOTABLE version="1.4" '
            'xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>'
            f'{fields}<DATA><TABLEDATA>{rows}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>')


@pytest.mark.parametrize("fmt", ["votable", "votable/b2", "csv", "fits"])
def test_null_and_variable_geometry_values_in_every_format(tap_server: LiveServer,
                                                          fmt: str) -> None:
    """A NULL inside a point or circle is a null cell; boxes and polygons (variable-length
    arrays) are written in BINARY2 too."""
    response = _sync(tap_server, RESPONSEFORMAT=fmt, QUERY=(
        "SELECT TOP 2 POINT('ICRS', s_ra, NULL) AS p, CIRCLE('ICRS', s_ra, s_dec, NULL) AS c,"
        " BOX('ICRS', 10, 20, 1, 1) AS b, POLYGON('ICRS', 0, 0, 1, 0, 1, 1) AS q, "
        "POINT('ICRS', s_ra, s_dec) AS good FROM ivoa.obscore"))
    assert response.status_code == 200, response.text
    if fmt.startswith("votable"):
        table = parse_single_table(io.BytesIO(response.content)).to_table()
        assert np.ma.getmaskarray(table["p"]).all() and np.ma.getmaskarray(table["c"]).all()
        assert len(table["b"][0]) == 8 and list(table["q"][1]) == [0, 0, 1, 0, 1, 1]
        assert not np.ma.getmaskarray(table["good"]).any()


@pytest.mark.parametrize("fmt", ["votable", "votable/b2", "fits"])
def test_uploaded_geometry_cells_empty_short_or_too_long_are_nulls(tap_server: LiveServer,
                                                                 fmt: str) -> None:
    fields = ('<FIELD name="id" datatype="int"/>'
              '<FIELD name="p" datatype="double" arraysize="2" xtype="point"/>'
              '<FIELD name="w" datatype="double" arraysize="5" xtype="point"/>')
    rows = ("<TR><TD>1</TD><TD>10 20</TD><TD>1 2 3 4 5</TD></TR>"
            "<TR><TD>2</TD><TD></TD><TD>1 2 3 4 5</TD></TR>"
            "<TR><TD>3</TD><TD>NaN NaN</TD><TD>1 2 3 4 5</TD></TR>")
    response = _upload_sync(tap_server, _votable(fields, rows),
                            "SELECT * FROM TAP_UPLOAD.t1 ORDER BY id", fmt)
    assert response.status_code == 200, response.text
    if fmt.startswith("votable"):
        table = parse_single_table(io.BytesIO(response.content)).to_table()
        assert list(table["p"][0]) == [10, 20]
        assert np.ma.getmaskarray(table["p"])[1:].all()


def test_integers_keep_every_digit_and_refuse_what_does_not_fit(tap_server: LiveServer
                                                                ) -> None:
    fields = '<FIELD name="big" datatype="long"/>'
    rows = "<TR><TD>9223372036854775807</TD></TR><TR><TD>9007199254740993</TD></TR>"
    response = _upload_sync(tap_server, _votable(fields, rows),
                            "SELECT big FROM TAP_UPLOAD.t1", "votable")
    assert response.status_code == 200, response.text
    table = parse_single_table(io.BytesIO(response.content)).to_table()
    assert sorted(int(v) for v in table["big"]) == [9007199254740993, 9223372036854775807]
    for query in ("SELECT TOP 1 CAST(40000 AS SMALLINT) AS s FROM ivoa.obscore",
                  "SELECT TOP 1 9223372036854775807 + 1 AS s FROM ivoa.obscore"):
        for fmt in ("votable", "fits", "csv"):
            refused = _sync(tap_server, QUERY=query, RESPONSEFORMAT=fmt)
            assert refused.status_code == 400, (query, fmt, refused.text)
            assert "does not fit its datatype" in refused.text and "CAST" in refused.text


def test_an_upload_of_a_type_tap_cannot_hold_is_refused(tap_server: LiveServer) -> None:
    fields = '<FIELD name="z" datatype="floatComplex"/>'
    response = _upload_sync(tap_server, _votable(fields, "<TR><TD>1 2</TD></TR>"),
                            "SELECT * FROM TAP_UPLOAD.t1", "votable")
    assert response.status_code == 400, response.text
    status, text = query_status(assert_valid_votable(response.content))
    assert status == "ERROR" and "floatComplex" in text and "'z'" in text


@pytest.mark.parametrize("limit", [{"MAXREC": "0"}, {}])
def test_no_rows_of_array_columns_make_a_fits_table(tap_server: LiveServer, limit) -> None:
    response = _sync(tap_server, RESPONSEFORMAT="fits", **limit, QUERY=(
        "SELECT obs_id, POINT('ICRS', s_ra, s_dec) AS p, POLYGON('ICRS', 0, 0, 1, 0, 1, 1) "
        "AS q FROM ivoa.obscore WHERE s_ra > 400"))
    assert response.status_code == 200, response.text
    table = fits.open(io.BytesIO(response.content))[1]
    assert len(table.data) == 0 and table.columns.names == ["obs_id", "p", "q"]
