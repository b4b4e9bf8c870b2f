"""A TAP client pointed at this service's root gets told that /sync and /async are SODA here
and that TAP is at <base>/tap, not "ID is missing" (issue 12, item 7; issue 14)."""

from __future__ import annotations

import httpx
import pytest
import pyvo
from pyvo.dal import DALAccessError
from server import LiveServer
from stilts_runner import run

ADQL = "SELECT TOP 1 * FROM ivoa.obscore"
SAYS = "this endpoint is SODA (image cutouts); TAP is at http://127.0.0.1:"


def test_pyvo_tap_sync_query_is_told_there_is_no_tap(live_server: LiveServer) -> None:
    with pytest.raises(DALAccessError) as raised:
        pyvo.dal.TAPService(live_server.base_url).run_sync(ADQL)
    assert SAYS in str(raised.value)
    assert f"TAP is at {live_server.base_url}/tap" in str(raised.value)
    assert "ID is missing" not in str(raised.value)


def test_stilts_tap_async_query_is_told_there_is_no_tap(live_server: LiveServer,
                                                         stilts: str) -> None:
    jobs_before = httpx.get(live_server.url("async"), timeout=60).text.count("jobref")
    completed = run(stilts, "tapquery", f"tapurl={live_server.base_url}", f"adql={ADQL}",
                    "sync=false", "omode=count")
    assert completed.returncode != 0
    assert SAYS in completed.stderr, completed.stderr
    jobs_after = httpx.get(live_server.url("async"), timeout=60).text.count("jobref")
    assert jobs_after == jobs_before  # no job was created


@pytest.mark.parametrize("params", [
    {"LANG": "ADQL"},
    {"query": ADQL},
    {"REQUEST": "doQuery"},
    {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": ADQL, "ID": "ivo://x/y"},
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_each_tap_parameter_is_recognised_on_sync(live_server: LiveServer, method: str,
                                                  params: dict[str, str]) -> None:
    response = httpx.request(method, live_server.url("sync"), timeout=60,
                             **({"params": params} if method == "GET" else {"data": params}))
    assert response.status_code == 400
    assert f"UsageError: {SAYS}" in response.text


def test_tap_parameters_are_refused_when_creating_a_job(live_server: LiveServer) -> None:
    response = httpx.post(live_server.url("async"), timeout=60,
                          data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": ADQL})
    assert response.status_code == 400
    assert f"UsageError: {SAYS}" in response.text
