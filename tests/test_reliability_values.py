"""Extreme values through the real server: integers of thousands of digits or beyond 64
bits, years at the ends of the calendar with a zone offset, RESPONSEFORMATs that no HTTP
header can carry, non-ASCII file tokens. Each is a DALI error with a 4xx that says what to
fix, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from lxml import etree
from server import LiveServer, assert_valid_votable, load_schema
from test_reliability_input import TIMEOUT, a_record, assert_dali_error

THOUSANDS_OF_DIGITS = "9" * 5000
BEYOND_64_BITS = str(2**64)
NEGATIVE_BEYOND_64_BITS = str(-(2**64))
VOTABLE_ERRORS = {"Accept": "application/x-votable+xml"}  # DALI error documents on /sync too


@pytest.fixture(scope="module")
def job_url(live_server: LiveServer) -> Iterator[str]:
    """A PENDING SODA job of the session server (deleted afterwards)."""
    record = a_record(live_server)
    created = httpx.post(live_server.url("async"), follow_redirects=False, timeout=TIMEOUT,
                         data={"ID": record.obs_publisher_did,
                               "CIRCLE": f"{record.s_ra} {record.s_dec} 0.002"})
    assert created.status_code == 303
    yield created.headers["location"]
    httpx.delete(created.headers["location"], timeout=TIMEOUT)


def _integer_requests(server: LiveServer, job_url: str, number: str
                      ) -> list[tuple[str, str, dict[str, str]]]:
    """(method, URL, parameters) of every integer parameter, each set to ``number``."""
    job_id = job_url.rstrip("/").rsplit("/", 1)[1]
    did = a_record(server).obs_publisher_did
    gallery = server.url(f"api/jobs/{job_id}/gallery")
    return [("GET", server.url("query"), {"MAXREC": number}),
            ("GET", server.url("query"), {"CALIB": number}),
            ("GET", server.url("links"), {"ID": did, "MAXREC": number}),
            ("GET", server.url("async"), {"LAST": number}),
            ("GET", job_url, {"WAIT": number}),
            ("POST", f"{job_url}/executionduration", {"EXECUTIONDURATION": number}),
            ("GET", gallery, {"LIMIT": number}),
            ("GET", gallery, {"OFFSET": number}),
            ("GET", server.url("sync"), {"ID": did, "CIRCLE": "52.9 -28.1 0.01",
                                         "RESPONSEFORMAT": "png", "SIZE": number})]


@pytest.mark.parametrize("number", [THOUSANDS_OF_DIGITS, BEYOND_64_BITS,
                                    NEGATIVE_BEYOND_64_BITS])
def test_huge_integers_are_usage_errors(live_server: LiveServer, job_url: str,
                                        number: str) -> None:
    for method, url, params in _integer_requests(live_server, job_url, number):
        response = httpx.request(method, url, timeout=TIMEOUT, headers=VOTABLE_ERRORS,
                                 **({"params": params} if method == "GET" else {"data": params}))
        name = list(params)[-1]
        text = assert_dali_error(response, 400, contains=name)
        assert len(text) < 500, text  # the 5,000 digits are not echoed back
    # The job is untouched and its document still valid.
    document = httpx.get(job_url, timeout=TIMEOUT)
    load_schema("UWS.xsd").assertValid(etree.fromstring(document.content))


def test_the_largest_64_bit_integer_is_accepted_where_values_are_clamped(
        live_server: LiveServer, job_url: str) -> None:
    largest = str(2**63 - 1)
    search = httpx.get(live_server.url("query"), params={"MAXREC": largest, "CALIB": largest},
                       timeout=TIMEOUT)
    assert search.status_code == 200
    assert httpx.get(live_server.url("async"), params={"LAST": largest},
                     timeout=TIMEOUT).status_code == 200
    duration = httpx.post(f"{job_url}/executionduration", timeout=TIMEOUT,
                          data={"EXECUTIONDURATION": largest})
    assert duration.status_code == 303  # accepted, and clamped to the configured maximum
    limit = live_server.settings.limits.default_execution_duration
    assert httpx.get(f"{job_url}/executionduration", timeout=TIMEOUT).text == str(limit)


EDGE_TIMES = ["0001-01-01T00:00:00+01:00", "0001-01-01T00:30:00+00:45",
              "9999-12-31T23:59:59-01:00", "9999-12-31T23:00:00-05:30"]


@pytest.mark.parametrize("moment", EDGE_TIMES)
def test_years_1_and_9999_with_an_offset_are_usage_errors(live_server: LiveServer,
                                                          job_url: str, moment: str) -> None:
    after = httpx.get(live_server.url("async"), params={"AFTER": moment}, timeout=TIMEOUT)
    assert_dali_error(after, 400, contains="AFTER")
    destruction = httpx.post(f"{job_url}/destruction", data={"DESTRUCTION": moment},
                             timeout=TIMEOUT)
    assert_dali_error(destruction, 400, contains="years 0001-9999")


def test_years_1_and_9999_in_utc_are_valid_times(live_server: LiveServer,
                                                 job_url: str) -> None:
    for moment in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        listing = httpx.get(live_server.url("async"), params={"AFTER": moment},
                            timeout=TIMEOUT)
        assert listing.status_code == 200
    # A job listed AFTER year 1 appears; none is AFTER year 9999.
    assert job_url.rsplit("/", 1)[1].encode() in httpx.get(
        live_server.url("async"), params={"AFTER": "0999-01-01T00:00:00Z"},
        timeout=TIMEOUT).content
    assert job_url.rsplit("/", 1)[1].encode() not in httpx.get(
        live_server.url("async"), params={"AFTER": "9999-01-01T00:00:00Z"},
        timeout=TIMEOUT).content


RESPONSEFORMATS = ["application/fits;x=\u20ac", "application/fits;x=\u00e9",
                   "image/png; name=\u4e2d\u6587", "application/fits;\u2028x=1",
                   "application/x-votable+xml;content=\u00ff"]


@pytest.mark.parametrize("value", RESPONSEFORMATS)
def test_a_responseformat_no_header_can_carry_is_a_usage_error(live_server: LiveServer,
                                                               value: str) -> None:
    record = a_record(live_server)
    did, circle = record.obs_publisher_did, f"{record.s_ra} {record.s_dec} 0.002"
    for path, params in (("sync", {"ID": did, "CIRCLE": circle}), ("query", {}),
                         ("links", {"ID": did}), ("preview", {"ID": did})):
        for method in ("GET",) if path == "preview" else ("GET", "POST"):
            request = {**params, "RESPONSEFORMAT": value}
            response = httpx.request(method, live_server.url(path), timeout=TIMEOUT,
                                     headers=VOTABLE_ERRORS,
                                     **({"params": request} if method == "GET"
                                        else {"data": request}))
            assert_dali_error(response, 400, contains="RESPONSEFORMAT")


def test_a_responseformat_with_mime_parameters_is_still_echoed(live_server: LiveServer
                                                               ) -> None:
    record = a_record(live_server)
    wanted = 'application/x-votable+xml; serialization="TABLEDATA"'
    response = httpx.get(live_server.url("links"), timeout=TIMEOUT,
                         params={"ID": record.obs_publisher_did, "RESPONSEFORMAT": wanted})
    assert response.status_code == 200 and response.headers["content-type"] == wanted
    assert_valid_votable(response.content)


@pytest.mark.parametrize("token", ["\u00e9\u20ac", "abc\u00e9", "%FF%FE", "\u4e2d" * 40,
                                   "aGVsbG8\u00e9"])
def test_a_non_ascii_file_token_is_404(live_server: LiveServer, token: str) -> None:
    response = httpx.get(live_server.url(f"files/{token}"), timeout=TIMEOUT)
    assert_dali_error(response, 404, contains="/links")
