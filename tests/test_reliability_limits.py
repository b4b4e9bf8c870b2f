"""Crowds: full sync slots answer 503 + Retry-After, a full job queue holds jobs (UWS HELD);
neither makes the service fall over, and both clear when the load goes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server import error_text

from vo_service.config import Limits
from vo_service.jobs.soda_job import SodaJob
from vo_service.protocols import soda

TIMEOUT = httpx.Timeout(60.0)


def a_record(server):  # noqa: ANN001, ANN201
    records = server.app.state.index.records(product_type="BGSUB", band="VIS")
    return next(r for r in records if len(r.shape) == 2)


def test_sync_beyond_its_concurrency_answers_503_with_retry_after(
        live_server_factory, demo_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = live_server_factory(demo_archive, limits=Limits(max_sync_concurrency=1))
    record = a_record(server)
    release, started = threading.Event(), threading.Event()
    original = soda.make_product

    def slow_product(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(soda, "make_product", slow_product)

    def cutout(radius: float) -> httpx.Response:
        return httpx.get(server.url("sync"), timeout=TIMEOUT, params={
            "ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} {radius}"})

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(cutout, 0.002)
        assert started.wait(30)
        busy = cutout(0.003)
        assert busy.status_code == 503 and int(busy.headers["retry-after"]) > 0
        assert error_text(busy).startswith("ServiceUnavailable:")
        assert httpx.get(server.url("availability"), timeout=TIMEOUT).status_code == 200
        release.set()
        assert first.result().status_code == 200
    assert cutout(0.003).status_code == 200  # the slot is free again


def test_a_full_job_queue_holds_new_jobs_and_runs_them_later(
        live_server_factory, demo_archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = live_server_factory(demo_archive, limits=Limits(job_workers=1, max_queued_jobs=1))
    record = a_record(server)
    release = threading.Event()
    original = SodaJob.run

    def blocked_run(self, context):  # noqa: ANN001, ANN202
        release.wait(60)
        return original(self, context)

    monkeypatch.setattr(SodaJob, "run", blocked_run)

    def create() -> str:
        response = httpx.post(server.url("async"), follow_redirects=False, timeout=TIMEOUT,
                              data={"ID": record.obs_publisher_did, "PHASE": "RUN",
                                    "CIRCLE": f"{record.s_ra} {record.s_dec} 0.002"})
        assert response.status_code == 303, response.text[-300:]
        return response.headers["location"]

    def phase(job_url: str) -> str:
        return httpx.get(f"{job_url}/phase", timeout=TIMEOUT).text

    running = create()
    deadline = time.monotonic() + 30
    while phase(running) != "EXECUTING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    queued, held = create(), create()
    assert (phase(queued), phase(held)) == ("QUEUED", "HELD")
    assert httpx.get(server.url("async"), timeout=TIMEOUT).status_code == 200
    release.set()
    for job_url in (running, queued):
        httpx.get(job_url, params={"WAIT": "30", "PHASE": "EXECUTING"}, timeout=TIMEOUT)
        httpx.get(job_url, params={"WAIT": "30", "PHASE": "QUEUED"}, timeout=TIMEOUT)
        deadline = time.monotonic() + 30
        while phase(job_url) not in ("COMPLETED", "ERROR"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert phase(job_url) == "COMPLETED"
    # A held job runs when asked again (UWS: the client must RUN it once there is room).
    httpx.post(f"{held}/phase", data={"PHASE": "RUN"}, timeout=TIMEOUT)
    deadline = time.monotonic() + 30
    while phase(held) not in ("COMPLETED", "ERROR"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert phase(held) == "COMPLETED"
