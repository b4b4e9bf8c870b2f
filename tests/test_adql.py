"""ADQL translation, the index prefilter and the safe query execution (vo_service.products.adql,
archive/tap_query.py, archive/tap_geometry.py), without a server."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vo_service.archive import tap_geometry as geo
from vo_service.archive import tap_query
from vo_service.archive.index import ArchiveIndex
from vo_service.archive.records import ImageRecord
from vo_service.archive.tap_schema import published_tables
from vo_service.products.adql import AdqlError, translate

TABLES = published_tables()


def _square(ra: float, dec: float, half: float) -> tuple[tuple[float, float], ...]:
    scale = 1.0 / math.cos(math.radians(dec))
    return tuple(((ra + dx * half * scale) % 360.0, dec + dy * half)
                 for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)))


@pytest.fixture(scope="module")
def sky_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Footprints everywhere, many across RA = 0, a few around the poles."""
    rng = np.random.default_rng(5)
    records = []
    centres = [(rng.uniform(0, 360), rng.uniform(-80, 80)) for _ in range(300)]
    centres += [(rng.uniform(-2, 2) % 360, rng.uniform(-2, 2)) for _ in range(200)]
    centres += [(rng.uniform(0, 360), rng.uniform(88.0, 89.0)) for _ in range(40)]
    for k, (ra, dec) in enumerate(centres):
        region = _square(ra, dec, rng.uniform(0.05, 0.6))
        records.append(ImageRecord(f"ivo://test/T?{k}", "T", str(k), Path(f"/x/{k}.fits"), 0,
                                   s_ra=ra, s_dec=dec, s_region=region,
                                   instrument_name="VIS" if k % 2 else "NISP"))
    pole = ((0.0, 89.0), (90.0, 89.0), (180.0, 89.0), (270.0, 89.0))  # holds the pole
    records.append(ImageRecord("ivo://test/T?pole", "T", "pole", Path("/x/p.fits"), 0,
                               s_ra=0.0, s_dec=90.0, s_region=pole))
    path = tmp_path_factory.mktemp("adql") / "index.sqlite"
    index = ArchiveIndex(path)
    index.add_records(records)
    index.close()
    return path


def _run(path: Path, query: str, uploads: tuple = ()) -> list[tuple[object, ...]]:
    translation = translate(query, (*TABLES, *(u.meta for u in uploads)))
    session = tap_query.open_session(path, "http://x", uploads)
    try:
        return tap_query.execute(session, translation.sql, None).rows
    finally:
        session.close()


def _all_regions(path: Path) -> dict[str, geo.Shape]:
    index = ArchiveIndex(path)
    try:
        return {r.obs_publisher_did: geo.make_polygon(list(r.s_region))
                for r in index.records() if r.s_region}
    finally:
        index.close()


@pytest.mark.parametrize("circle", [(0.1, 0.2, 1.5), (359.8, -0.5, 1.0), (45.0, 89.6, 1.2),
                                    (200.0, 30.0, 20.0), (180.0, -89.0, 5.0)])
def test_prefiltered_cone_equals_the_exact_test_of_every_row(sky_index: Path,
                                                            circle: tuple) -> None:
    ra, dec, radius = circle
    query = ("SELECT obs_publisher_did FROM ivoa.obscore WHERE "
             f"INTERSECTS(s_region, CIRCLE('ICRS', {ra}, {dec}, {radius})) = 1")
    assert "images_sky" in translate(query, TABLES).sql  # the index is used
    got = {row[0] for row in _run(sky_index, query)}
    shape = geo.make_circle(ra, dec, radius)
    expected = {did for did, region in _all_regions(sky_index).items()
                if geo.intersects(region, shape)}
    assert got == expected
    if dec > 89:
        assert "ivo://test/T?pole" in got


def test_prefiltered_point_join_equals_the_exact_test(sky_index: Path) -> None:
    rng = np.random.default_rng(9)
    points = [(float(rng.uniform(-3, 3) % 360), float(rng.uniform(-3, 3))) for _ in range(300)]
    points += [(float(rng.uniform(0, 360)), float(rng.uniform(88, 90))) for _ in range(30)]
    from vo_service.archive.tap_schema import ColumnMeta, TableMeta

    meta = TableMeta("tap_upload", "tap_upload.t1", (
        ColumnMeta("id", "long", sql_name="c0"), ColumnMeta("ra", "double", sql_name="c1"),
        ColumnMeta("dec", "double", sql_name="c2")), "tap_upload_t1")
    upload = tap_query.UploadTable(meta, [(k, a, d) for k, (a, d) in enumerate(points)])
    rows = _run(sky_index, "SELECT t.id, o.obs_publisher_did FROM tap_upload.t1 AS t JOIN "
                "ivoa.obscore AS o ON CONTAINS(POINT('ICRS', t.ra, t.dec), o.s_region) = 1",
                (upload,))
    regions = _all_regions(sky_index)
    expected = {(k, did) for k, (a, d) in enumerate(points) for did, region in regions.items()
                if geo.contains(geo.make_point(a, d), region)}
    assert set(rows) == expected
    assert len(expected) > 50


def test_centre_cone_across_ra_zero(sky_index: Path) -> None:
    query = ("SELECT obs_publisher_did FROM ivoa.obscore WHERE "
             "DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', 359.9, 0.0)) < 1.5")
    assert "BETWEEN" in translate(query, TABLES).sql
    got = {row[0] for row in _run(sky_index, query)}
    index = ArchiveIndex(sky_index)
    expected = {r.obs_publisher_did for r in index.records() if r.s_ra is not None and
                geo.angle(geo.xyz(r.s_ra, r.s_dec), geo.xyz(359.9, 0.0)) < 1.5}
    index.close()
    assert got == expected and any(did for did in got)


def test_geometry_functions_give_adql_answers(sky_index: Path) -> None:
    (row,) = _run(sky_index, (
        "SELECT TOP 1 AREA(CIRCLE('', 10, 20, 1)), DISTANCE(1, 0, 2, 0), "
        "COORD1(POINT(30, 40)), COORD2(CENTROID(CIRCLE(30, 40, 1))), "
        "CONTAINS(CIRCLE(10, 10, 1), CIRCLE(10, 10.5, 2)), "
        "INTERSECTS(POLYGON(0, 0, 1, 0, 1, 1), BOX(0.5, 0.5, 0.2, 0.2)), "
        "LOG(EXP(2)), LOG10(1000), TRUNCATE(2.789, 1), MOD(7, 3) FROM ivoa.obscore"))
    assert row[0] == pytest.approx(math.pi * (1 - math.cos(math.radians(1))) * 2
                                   * (180 / math.pi) ** 2)
    assert row[1] == pytest.approx(1.0)
    assert row[2:6] == (30.0, 40.0, 1, 1)
    assert row[6:9] == (pytest.approx(2.0), pytest.approx(3.0), pytest.approx(2.7))
    assert row[9] == 1


@pytest.mark.parametrize("sql", [
    "SELECT * FROM files", "SELECT * FROM meta", "DELETE FROM images",
    "SELECT * FROM sqlite_master", "PRAGMA table_info(images)",
    "INSERT INTO tap_schema_tables VALUES (1, 2, 3, 4, 5, 6)",
    "ATTACH DATABASE '/tmp/x.sqlite' AS x", "SELECT load_extension('x')",
])
def test_the_authorizer_allows_only_reads_of_published_tables(sky_index: Path,
                                                              sql: str) -> None:
    session = tap_query.open_session(sky_index, "http://x")
    try:
        with pytest.raises(tap_query.QueryFailed):
            tap_query.execute(session, sql, 10)
    finally:
        session.close()


def test_the_execution_duration_ends_a_long_query(sky_index: Path) -> None:
    session = tap_query.open_session(sky_index, "http://x", seconds=0.2)
    try:
        with pytest.raises(tap_query.QueryTimeout):
            tap_query.execute(session, "SELECT COUNT(*) FROM tap_obscore a, tap_obscore b, "
                              "tap_obscore c", None)
    finally:
        session.close()


@pytest.mark.parametrize(("query", "says", "column"), [
    ("SELECT TOP 5 s_ra FROM ivoa.obscore LIMIT 5", "LIMIT", 37),
    ("SELECT s_ra,\n  bogus FROM ivoa.obscore", "'bogus'", 3),
    ("SELECT s_ra FROM ivoa.obscore WHERE SPLAT(s_ra) = 1", "unknown function SPLAT", 37),
    ("SELECT CIRCLE(1) FROM ivoa.obscore", "CIRCLE takes 2 or 3", 8),
    ("SELECT s_ra FROM ivoa.obscore WHERE", "syntax error", None),
    ("SELECT * FROM", "the query ends too early", None),
    ("SELECT 1", "needs a FROM", 1),
    ("SELECT " + "(" * 3000 + "1" + ")" * 3000 + " FROM ivoa.obscore", "nested too deeply",
     None),
    ("SELECT TOP 99999999999999999999 s_ra FROM ivoa.obscore", "more than the largest", None),
    ("SELECT s_ra FROM ivoa.obscore OFFSET 99999999999999999999", "OFFSET 9999", None),
    ("SELECT s_ra FROM ivoa.obscore OFFSET -1", "OFFSET takes a whole number", None),
    ("SELECT SUM(obs_id) FROM ivoa.obscore", "SUM takes numbers, but obs_id is text", 12),
    ("SELECT AVG(s_region) FROM ivoa.obscore", "but s_region is a geometry", 12),
    ("SELECT s_ra, s_region + 1 FROM ivoa.obscore", "arithmetic takes numbers", 14),
    ("SELECT -s_region FROM ivoa.obscore", "s_region is a geometry", 9),
    ("SELECT POINT('ICRS', s_ra, s_dec) * 2 FROM ivoa.obscore", "POINT is a geometry", 8),
    ("SELECT s_ra FROM ivoa.obscore WHERE UPPER(obs_id) / 2 > 1", "UPPER is text", None),
    ("SELECT s_region || 'x' FROM ivoa.obscore", "|| takes text, but s_region is a geometry",
     8),
    ("SELECT obs_id FROM ivoa.obscore WHERE s_region LIKE 'P%'", "LIKE takes text", 39),
    ("SELECT COUNT(*), s_ra FROM ivoa.obscore", "s_ra is selected beside an aggregate", 18),
    ("SELECT SUM(x) FROM (SELECT obs_id AS x FROM ivoa.obscore) AS t", "x is text", 12),
    ("WITH c AS (SELECT s_region FROM ivoa.obscore) SELECT AVG(s_region) FROM c",
     "s_region is a geometry", None),
    ("SELECT SUM(x) FROM (SELECT obs_id AS x FROM ivoa.obscore UNION "
     "SELECT obs_collection FROM ivoa.obscore) AS t", "x is text", 12),
    ("SELECT AVG(r) FROM (SELECT s_ra AS a, s_region AS r FROM ivoa.obscore UNION ALL "
     "SELECT s_dec, s_region FROM ivoa.obscore UNION SELECT 1, s_region FROM ivoa.obscore) "
     "AS t", "r is a geometry", 12),
])
def test_errors_say_what_and_where(query: str, says: str, column: int | None) -> None:
    with pytest.raises(AdqlError) as raised:
        translate(query, TABLES)
    assert says in str(raised.value)
    if column is not None:
        assert raised.value.column == column


def test_operations_on_operands_of_their_type_still_translate() -> None:
    """The checks of operands and grouping refuse only what is known to be wrong (SQLite
    would answer 0, a geometry's inner form or some row's value without a word)."""
    for query in ("SELECT s_ra + 1, -s_dec, ABS(s_dec), SQRT(s_fov), calib_level * 2 "
                  "FROM ivoa.obscore",
                  "SELECT SUM(s_ra), AVG(t_min), SUM(s_ra) * 2 + COUNT(*) FROM ivoa.obscore",
                  "SELECT DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', 1, 2)) * 3600 "
                  "FROM ivoa.obscore",
                  "SELECT SUM(x) FROM (SELECT s_ra AS x FROM ivoa.obscore) AS t",
                  "SELECT SUM(x) FROM (SELECT s_ra AS x FROM ivoa.obscore UNION "
                  "SELECT s_dec FROM ivoa.obscore) AS t",
                  "SELECT MAX(obs_id), MIN(s_region), COUNT(*) FROM ivoa.obscore",
                  "SELECT obs_id || 'x', UPPER(obs_id) FROM ivoa.obscore "
                  "WHERE obs_id LIKE 'E%'",
                  "SELECT band, COUNT(*) FROM ivoa.obscore GROUP BY band",
                  "SELECT s_ra, (SELECT COUNT(*) FROM ivoa.obscore) FROM ivoa.obscore"):
        translate(query, TABLES)


def test_results_are_typed_from_metadata() -> None:
    translation = translate(
        "SELECT calib_level, COUNT(*) AS n, s_region, POINT(s_ra, s_dec) AS p, s_ra * 2 "
        "FROM ivoa.obscore GROUP BY calib_level, s_region, s_ra, s_dec", TABLES)
    columns = {c.name: c for c in translation.columns}
    assert columns["calib_level"].datatype == "short"
    assert columns["calib_level"].ucd == "meta.code;obs.calib"
    assert columns["n"].datatype == "long"
    assert columns["s_region"].xtype == "adql:REGION"
    assert (columns["p"].datatype, columns["p"].arraysize, columns["p"].xtype) == \
        ("double", "2", "point")
    assert list(columns) == ["calib_level", "n", "s_region", "p", "expr"]


ADQL_WORDS = st.sampled_from([
    "SELECT", "TOP", "5", "*", "FROM", "ivoa.obscore", "tap_schema.tables", "WHERE", "AND",
    "s_ra", "s_dec", "s_region", "(", ")", ",", "=", "<", "1", "'x'", "CONTAINS", "POINT",
    "CIRCLE", "DISTANCE", "GROUP BY", "ORDER BY", "JOIN", "ON", "AS", "t", "UNION", ";",
    "LIMIT", "COUNT(*)", "--", '"', "ILIKE", "IN", "OFFSET", "BOX", "REGION", "||"])


@settings(max_examples=300, deadline=None)
@given(st.lists(ADQL_WORDS, min_size=1, max_size=25))
def test_any_text_translates_or_is_an_adql_error(words: list[str]) -> None:
    with contextlib.suppress(AdqlError):  # any other exception fails the test
        translate(" ".join(words), TABLES)
