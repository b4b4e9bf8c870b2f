"""A UWS client for the tests that run jobs through a live server: read and validate job
documents, wait for a final phase, list results; module-scoped server and client fixtures.

    from uws_client import UWS, job_document, module_client, module_server, wait_final

    soda_server = module_server("soda-async-state")
    client = module_client(follow_redirects=True)
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from astropy.io.votable import parse_single_table
from lxml import etree
from server import LiveServer, load_schema, serve_archive

UWS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0"}
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
ACTIVE_PHASES = ("PENDING", "QUEUED", "EXECUTING")


def job_document(client: httpx.Client, url: str, **query: str) -> etree._Element:
    """GET a UWS document (200) and assert it validates against UWS.xsd."""
    response = client.get(url, params=query)
    assert response.status_code == 200, response.text
    root = etree.fromstring(response.content)
    load_schema("UWS.xsd").assertValid(root)
    return root


def phase_of(root: etree._Element) -> str:
    """The phase of a job document."""
    return root.findtext("uws:phase", namespaces=UWS)


def wait_final(client: httpx.Client, url: str, *,
               read: Callable[..., etree._Element] = job_document, wait: str = "30",
               attempts: int = 40) -> etree._Element:
    """The job document once the job has left PENDING/QUEUED/EXECUTING (blocking WAIT
    requests, each read with ``read``); AssertionError after ``attempts`` of them."""
    for _ in range(attempts):
        root = read(client, url, WAIT=wait)
        if phase_of(root) not in ACTIVE_PHASES:
            return root
    raise AssertionError("the job did not finish")


def wait_for_results(client: httpx.Client, url: str, count: int, *,
                     pause: float = 0.05, attempts: int = 600) -> None:
    """Poll the job until it has at least ``count`` results, its stamps reached from its
    manifest included (a job caught mid-run), or give up quietly after ``attempts`` polls:
    the caller asserts what it needs."""
    for _ in range(attempts):
        if len(job_results(client, job_document(client, url))) >= count:
            return
        time.sleep(pause)


def results_of(root: etree._Element) -> dict[str, tuple[str, str]]:
    """Result id -> (URL, MIME type) of a job document."""
    return {r.get("id"): (r.get(XLINK_HREF), r.get("mime-type"))
            for r in root.iterfind("uws:results/uws:result", UWS)}


def stamps_of(client: httpx.Client, root: etree._Element) -> dict[str, tuple[str, str]]:
    """Result id -> (URL, MIME type) of the stamps a catalog job's manifest links to (its
    rows' access_url and preview_url), as a user reaches them; empty without a manifest."""
    manifest = results_of(root).get("manifest")
    if manifest is None:
        return {}
    response = client.get(manifest[0])
    assert response.status_code == 200, response.text
    table = parse_single_table(io.BytesIO(response.content)).to_table()
    stamps = {}
    for row in table:
        for column, mime in (("access_url", str(row["content_type"])),
                             ("preview_url", "image/png")):
            link = str(row[column]) if not _empty(row[column]) else ""
            if link:
                stamps[unquote(link.rsplit("/", 1)[1])] = (link, mime)
    return stamps


def job_results(client: httpx.Client, root: etree._Element) -> dict[str, tuple[str, str]]:
    """Everything a job hands back: its listed results and the stamps its manifest links."""
    return {**results_of(root), **stamps_of(client, root)}


def _empty(value: object) -> bool:
    return value is None or value is np.ma.masked or str(value) in ("", "--")


def module_server(state_name: str) -> Callable[..., Iterator[LiveServer]]:
    """A module-scoped fixture: the demo archive served with state in a fresh
    ``state_name`` directory."""

    @pytest.fixture(scope="module")
    def server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[LiveServer]:
        with serve_archive(demo_archive, tmp_path_factory.mktemp(state_name)) as live:
            yield live

    return server


def module_client(**options: object) -> Callable[[], Iterator[httpx.Client]]:
    """A module-scoped fixture: one httpx.Client (120 s timeout, ``options``)."""

    @pytest.fixture(scope="module")
    def client() -> Iterator[httpx.Client]:
        with httpx.Client(timeout=120, **options) as http:
            yield http

    return client
