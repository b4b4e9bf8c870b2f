"""The application as a whole: front page, routing errors, the real archive end to end."""

from __future__ import annotations

import io
from urllib.parse import quote

import httpx
import pytest
import pyvo
from astropy.io import fits
from pyvo.dal.adhoc import DatalinkResults
from server import LiveServer, assert_valid_votable, query_status

from vo_service.app import create_app


def test_front_page_lists_what_the_archive_holds(live_server: LiveServer) -> None:
    response = httpx.get(live_server.base_url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for expected in ("EUCLID-DEMO", "VIS", "NISP", "DECAM", "NIR-H", "BGSUB", "RMS", "FLAG",
                     "BGMOD", "/capabilities", "/examples", "/query"):
        assert expected in page, expected
    count = live_server.app.state.index.count()
    assert f'<strong id="image-count">{count}</strong>' in page
    # the facet links are working SIA queries
    link = live_server.url("query?BANDNAME=NIR-Y")
    assert f'href="{link}"' in page
    assert len(assert_valid_votable(httpx.get(link).content).resources[0].tables[0].array) > 0


def test_unknown_path_and_method_are_dali_errors(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url("no/such/thing"))
    assert response.status_code == 404
    status, text = query_status(assert_valid_votable(response.content))
    assert status == "ERROR" and text.startswith("UsageError: there is no resource")
    response = httpx.delete(live_server.url("query"))
    assert response.status_code == 405
    assert query_status(assert_valid_votable(response.content))[1].startswith("UsageError: ")


def test_browser_clients_on_other_sites_may_call(live_server: LiveServer) -> None:
    origin = {"Origin": "https://aladin.cds.unistra.fr"}
    response = httpx.get(live_server.url("query?MAXREC=0"), headers=origin)
    assert response.headers["access-control-allow-origin"] == "*"
    preflight = httpx.options(live_server.url("links"), headers={
        **origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_create_app_exposes_shared_state(tmp_path) -> None:  # noqa: ANN001
    from vo_service.config import Settings

    app = create_app(Settings(state_dir=tmp_path / "state"))
    assert app.state.index is not None and app.state.job_service is not None
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/", "/capabilities", "/availability", "/examples", "/query", "/links",
            "/files/{token}", "/preview", "/sync", "/async", "/static"} <= paths


@pytest.mark.slow
def test_real_files_discovered_linked_and_downloaded(real_live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(real_live_server.base_url)
    table = service.search(pos=(85.25, -2.46, 0.05)).to_table()
    horsehead = [str(url) for url, obs_id in zip(table["access_url"], table["obs_id"],
                                                  strict=True) if "HorseHead" in str(obs_id)]
    assert horsehead
    datalinks = DatalinkResults.from_result_url(horsehead[0])
    this = next(datalinks.bysemantics("#this", include_narrower=False))
    with fits.open(io.BytesIO(httpx.get(this.access_url, timeout=60).content)) as hdul:
        assert hdul[0].data is not None
    preview = next(datalinks.bysemantics("#preview", include_narrower=False))
    assert httpx.get(preview.access_url, timeout=60).content[:4] == b"\x89PNG"
    # every indexed real image gets a preview and valid links
    records = real_live_server.app.state.index.records()
    assert len(records) >= 15
    for record in records:
        did = quote(record.obs_publisher_did, safe="")
        links = httpx.get(real_live_server.url(f"links?ID={did}"), timeout=60)
        assert query_status(assert_valid_votable(links.content))[0] == "OK"
        answer = httpx.get(real_live_server.url(f"preview?ID={did}"), timeout=120)
        assert answer.status_code == 200, (record.obs_publisher_did, answer.text[:300])


def test_an_empty_archive_still_answers(live_server_factory, tmp_path) -> None:  # noqa: ANN001
    empty = tmp_path / "empty"
    empty.mkdir()
    server = live_server_factory(empty)
    page = httpx.get(server.base_url + "/")
    assert page.status_code == 200 and '<strong id="image-count">0</strong>' in page.text
    votable = assert_valid_votable(httpx.get(server.url("query?POS=CIRCLE 10 10 1")).content)
    assert len(votable.resources[0].tables[0].array) == 0
    assert httpx.get(server.url("examples")).status_code == 200
    assert b"<vosi:available>true</vosi:available>" in httpx.get(server.url("availability")).content
