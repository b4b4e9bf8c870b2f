"""VOSI capabilities and availability, and DALI examples, as a VO client reads them."""

from __future__ import annotations

import io
from email.utils import parsedate_to_datetime

import httpx
import pytest
import pyvo
from lxml import etree
from server import LiveServer, assert_valid_votable, load_schema

from vo_service.protocols import vosi

CAPABILITIES = {
    "ivo://ivoa.net/std/VOSI#capabilities": "capabilities",
    "ivo://ivoa.net/std/VOSI#availability": "availability",
    "ivo://ivoa.net/std/SIA#query-2.0": "query",
    "ivo://ivoa.net/std/DataLink#links-1.1": "links",
    "ivo://ivoa.net/std/SODA#sync-1.0": "sync",
    "ivo://ivoa.net/std/SODA#async-1.0": "async",
    "ivo://ivoa.net/std/DALI#examples": "examples",
    "ivo://ivoa.net/std/moc": "coverage",
    "ivo://ivoa.net/std/TAP": "tap",
    "ivo://ivoa.net/std/VOSI#tables-1.1": "tap/tables",
}


def test_capabilities_are_schema_valid_and_complete(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url("capabilities"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(response.content)
    load_schema("capabilities-bundle.xsd").assertValid(root)
    assert root.tag == f"{{{vosi.VOSI_CAP_NS}}}capabilities"
    declared = {}
    for capability in root.findall("capability"):
        declared[capability.get("standardID")] = capability.find("interface/accessURL").text
    assert declared == {sid: live_server.url(path) for sid, path in CAPABILITIES.items()}


def test_capabilities_have_last_modified_and_head(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url("capabilities"))
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert modified.tzinfo is not None
    head = httpx.head(live_server.url("capabilities"))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["last-modified"] == response.headers["last-modified"]
    cached = httpx.get(live_server.url("capabilities"),
                       headers={"If-Modified-Since": response.headers["last-modified"]})
    assert cached.status_code == 304


def test_configured_base_url_is_used() -> None:
    document = vosi.capabilities_document("https://archive.example.org/cutouts", ["query"])
    url = etree.fromstring(document).find("capability/interface/accessURL").text
    assert url == "https://archive.example.org/cutouts/query"


def test_pyvo_reads_the_capabilities(live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(live_server.base_url)
    assert service.query_ep == live_server.url("query")
    standard_ids = {c.standardid for c in service.capabilities}
    assert set(CAPABILITIES) <= standard_ids
    versions = {c.standardid: c.interfaces[0].version for c in service.capabilities}
    assert versions["ivo://ivoa.net/std/DataLink#links-1.1"] == "1.1"  # absent reads as 1.0
    assert versions["ivo://ivoa.net/std/SIA#query-2.0"] == "2.0"
    assert versions["ivo://ivoa.net/std/SODA#sync-1.0"] == "1.0"


def test_availability(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url("availability"))
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    load_schema("VOSIAvailability-v1.0.xsd").assertValid(root)
    namespace = {"v": vosi.VOSI_AVAIL_NS}
    assert root.findtext("v:available", namespaces=namespace) == "true"
    assert "images indexed" in root.findtext("v:note", namespaces=namespace)
    parsed = pyvo.io.vosi.parse_availability(io.BytesIO(response.content))
    assert parsed.available is True


def test_availability_reports_a_missing_index(tmp_path) -> None:  # noqa: ANN001
    available, note = vosi.probe_index(tmp_path / "index.sqlite")
    assert available is False and "run the indexer" in note
    document = vosi.availability_document(False, None, [note])
    load_schema("VOSIAvailability-v1.0.xsd").assertValid(etree.fromstring(document))


def test_vosi_refuses_post_with_a_dali_error(live_server: LiveServer) -> None:
    response = httpx.post(live_server.url("capabilities"))
    assert response.status_code == 405
    assert b"UsageError: POST is not allowed" in response.content


@pytest.mark.parametrize("server_fixture", ["live_server", "real_live_server"])
def test_examples_page(server_fixture: str, request: pytest.FixtureRequest) -> None:
    live_server: LiveServer = request.getfixturevalue(server_fixture)
    response = httpx.get(live_server.url("examples"))
    assert response.status_code == 200
    root = etree.fromstring(response.content)  # well-formed XML (XHTML)
    xhtml = {"h": "http://www.w3.org/1999/xhtml"}
    containers = root.xpath("//*[@vocab]")
    assert [c.get("vocab") for c in containers] == ["http://www.ivoa.net/rdf/examples#"]
    examples = root.xpath("//*[@typeof='example']")
    assert len(examples) >= 3
    for example in examples:
        assert example.get("resource") == "#" + example.get("id")
        assert len(example.xpath(".//*[@property='name']")) == 1
        capability = example.xpath(".//*[@property='capability']")[0].text
        assert capability in CAPABILITIES
        for pair in example.xpath(".//*[@property='generic-parameter']"):
            assert pair.get("typeof") == "keyval"
            assert pair.xpath(".//*[@property='key']") and pair.xpath(".//*[@property='value']")
    # every example runs: its link answers 200
    for link in root.xpath("//h:a/@href", namespaces=xhtml):
        answer = httpx.get(link, timeout=60)
        assert answer.status_code == 200, link
        if "/query?" in link:  # the discovery examples find images
            table = assert_valid_votable(answer.content).resources[0].tables[0]
            assert len(table.array) > 0, link
