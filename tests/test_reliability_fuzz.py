"""Random parameters and catalogs thrown at the real server (hypothesis, bounded).

Whatever arrives, the service answers without a 500, and every error is a DALI error in the
form its endpoint gives (text/plain on /sync unless a VOTable is asked for, else a valid
VOTable). Jobs the fuzzing creates are deleted again.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server import LiveServer, error_text

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NAMES = ["ID", "id", "CIRCLE", "circle", "POLYGON", "POS", "BAND", "TIME", "POL",
         "RESPONSEFORMAT", "MAXREC", "RUNID", "COLLECTION", "INSTRUMENT", "BANDNAME",
         "PRODUCTTYPE", "FOV", "SPATRES", "EXPTIME", "DPTYPE", "CALIB", "TARGET", "FORMAT",
         "UPLOAD", "SIZE", "RA_COLUMN", "DEC_COLUMN", "WORKERS", "STRETCH", "LIMITS",
         "BINNING", "PHASE", "REQUEST", "X"]
NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(str),
    st.sampled_from(["0", "-0", "360", "359.9999", "90", "-90", "180", "1e308", "-1e-320",
                     "NaN", "+InF", "-inf", "52.9", "-28.1", "0.01", "1e-7", "5e-07"]),
    st.integers(-10**6, 10**6).map(str))
SHAPES = st.one_of(
    st.lists(NUMBERS, min_size=0, max_size=9).map(" ".join),
    st.tuples(st.sampled_from(["CIRCLE", "RANGE", "POLYGON", "circle", "BOX", ""]),
              st.lists(NUMBERS, max_size=8)).map(lambda kv: " ".join([kv[0], *kv[1]])))
VALUES = st.one_of(SHAPES, st.text(max_size=40),
                   st.sampled_from(["fits", "votable", "image/png", "application/zip", "I Q",
                                    "ivo://vo-service.example/x?../../etc/passwd", "true",
                                    "cat,param:cat", "param:", "RUN", "0", "-1", "99999999"]))
PARAMS = st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), st.text(min_size=1, max_size=8)),
                            VALUES), max_size=8)


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=60.0) as http:
        yield http


@pytest.fixture(scope="module")
def some_ids(live_server: LiveServer) -> list[str]:
    return [r.obs_publisher_did for r in live_server.app.state.index.records()[:3]]


def check(response: httpx.Response) -> None:
    """No 500; an error is a DALI error (4xx, or 503 when busy): text/plain from /sync
    unless a VOTable was asked for, else a VOTable."""
    assert response.status_code < 500 or response.status_code == 503, (
        response.status_code, response.request.url, response.text[:400])
    if response.status_code >= 400:
        text = error_text(response)
        assert text.split(":")[0] in (
            "UsageError", "MultiValuedParamNotSupported", "ServiceUnavailable"), text


def form(params: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Repeated names as lists, the shape httpx takes for form bodies."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    return grouped


def clean_up(client: httpx.Client, response: httpx.Response) -> None:
    if response.status_code == 303 and "/async/" in response.headers.get("location", ""):
        client.delete(response.headers["location"])


def with_an_id(params: list[tuple[str, str]], ids: list[str], pick: int) -> list:
    """Half of the examples name a real image, so the checks past ID lookup are reached."""
    return [("ID", ids[pick % len(ids)]), *params] if pick % 2 else params


@FUZZ
@given(params=PARAMS, pick=st.integers(0, 5), post=st.booleans())
def test_sync_survives_random_parameters(client: httpx.Client, some_ids: list[str],
                                         params: list, pick: int, post: bool) -> None:
    params = with_an_id(params, some_ids, pick)
    if post:
        check(client.post("/sync", data=form(params)))
    else:
        check(client.get("/sync", params=params))


@FUZZ
@given(params=PARAMS, pick=st.integers(0, 5))
def test_async_creation_survives_random_parameters(client: httpx.Client, some_ids: list[str],
                                                   params: list, pick: int) -> None:
    params = [(n, v) for n, v in with_an_id(params, some_ids, pick) if n.upper() != "PHASE"]
    response = client.post("/async", data=form(params), follow_redirects=False)
    check(response)
    clean_up(client, response)


@pytest.mark.slow
@FUZZ
@given(params=PARAMS, pick=st.integers(0, 5))
def test_query_and_links_survive_random_parameters(client: httpx.Client, some_ids: list[str],
                                                   params: list, pick: int) -> None:
    check(client.get("/query", params=params))
    check(client.get("/links", params=with_an_id(params, some_ids, pick)))


CELLS = st.one_of(NUMBERS, st.text(alphabet=st.characters(blacklist_categories=["Cs"]),
                                   max_size=12), st.just(""))
CSV = st.tuples(
    st.lists(st.sampled_from(["id", "ra", "dec", "RAJ2000", "DEJ2000", "size", "name", "x",
                              ""]), min_size=0, max_size=5),
    st.lists(st.lists(CELLS, max_size=6), max_size=12),
    st.sampled_from([",", "\t", ";"]),
).map(lambda t: "\n".join([t[2].join(t[0])] + [t[2].join(row) for row in t[1]]).encode())
CATALOGS = st.one_of(
    CSV, st.binary(max_size=3000),
    st.binary(max_size=3000).map(lambda b: b"SIMPLE  =                    T" + b),
    st.text(max_size=400).map(lambda t: f"<?xml version='1.0'?><VOTABLE>{t}".encode()))


@FUZZ
@given(catalog=CATALOGS, params=st.lists(st.tuples(
    st.sampled_from(["RA_COLUMN", "DEC_COLUMN", "ID_COLUMN", "SIZE", "SIZE_COLUMN",
                     "BANDNAME", "PRODUCTTYPE", "FORMAT", "WORKERS"]), VALUES), max_size=3))
def test_catalog_uploads_survive_random_files(client: httpx.Client, catalog: bytes,
                                             params: list) -> None:
    response = client.post("/async", data=form([("UPLOAD", "cat,param:cat"), *params]),
                           files={"cat": ("catalog", catalog)}, follow_redirects=False)
    check(response)
    clean_up(client, response)
    check(client.post("/api/catalog", files={"catalog": ("catalog", catalog)}))
