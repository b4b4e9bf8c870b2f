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
from vo_service.products import cutouts
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
    original = cutouts.make_product

    def slow_product(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(cutouts, "make_product", slow_product)

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


# -- sync memory: admission by estimated bytes, not only by count ---------------------------

VOTABLE_ERRORS = {"Accept": "application/x-votable+xml"}  # DALI error documents on /sync


def _circle(record, pixels: int) -> str:  # noqa: ANN001 - an ImageRecord
    """A CIRCLE around the image centre whose box is about ``pixels`` wide."""
    scale = record.s_fov / max(record.s_xel1, record.s_xel2)  # degrees per pixel
    return f"{record.s_ra} {record.s_dec} {pixels / 2 * scale:.8f}"


def _estimate(record, circle: str, **params: str) -> int:  # noqa: ANN001
    """What the service will reserve for this request (its own planning, no pixel read)."""
    from vo_service.protocols.dali import Params

    request = soda.parse_sync_request(Params.from_pairs(
        [("ID", record.obs_publisher_did), ("CIRCLE", circle), *params.items()]))
    return cutouts.planned_bytes(request, [record], Limits().max_cutout_pixels)


def _assert_busy_for_memory(response: httpx.Response) -> str:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert int(response.headers["retry-after"]) > 0
    text = error_text(response)
    assert text.startswith("ServiceUnavailable:")
    assert "of memory for sync requests" in text and "retry" in text
    return text


def test_sync_is_admitted_by_estimated_memory_not_by_count(
        live_server, live_server_factory, demo_archive: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    record = a_record(live_server)
    big, other_big, small = _circle(record, 400), _circle(record, 390), _circle(record, 20)
    big_bytes, small_bytes = _estimate(record, big), _estimate(record, small)
    assert _estimate(record, other_big) > small_bytes * 10
    # Room for one big cutout and a few small ones, not for two big ones; many slots.
    budget = big_bytes + big_bytes // 2
    server = live_server_factory(demo_archive, limits=Limits(sync_memory_bytes=budget,
                                                             max_sync_concurrency=16))
    release, cutting = threading.Event(), threading.Event()
    original = cutouts.cut_record

    def held_cut(request, record, max_pixels):  # noqa: ANN001, ANN202
        if len(request.regions) == 1 and request.regions[0].radius > 0.5 * _radius(big):
            cutting.set()
            release.wait(30)
        return original(request, record, max_pixels)

    monkeypatch.setattr(cutouts, "cut_record", held_cut)

    def cutout(circle: str, **more: str) -> httpx.Response:
        return httpx.get(server.url("sync"), timeout=TIMEOUT, headers=VOTABLE_ERRORS,
                         params={"ID": record.obs_publisher_did, "CIRCLE": circle, **more})

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(cutout, big)
        assert cutting.wait(30)  # the big cutout holds its memory
        text = _assert_busy_for_memory(cutout(other_big))
        assert "MiB" in text
        assert cutout(small).status_code == 200  # fits beside it: bytes count, not requests
        assert httpx.get(server.url("availability"), timeout=TIMEOUT).status_code == 200
        release.set()
        assert first.result().status_code == 200
    assert server.app.state.sync_memory.used == 0  # everything given back
    assert cutout(other_big).status_code == 200
    # A cache hit reads a file: no memory is reserved, even when the budget is spent.
    server.app.state.sync_memory.used = budget
    hit = cutout(big)
    assert hit.status_code == 200 and hit.headers["x-cache"] == "hit"
    _assert_busy_for_memory(cutout(_circle(record, 300)))
    server.app.state.sync_memory.used = 0


def _radius(circle: str) -> float:
    return float(circle.split()[2])


def test_a_sync_request_larger_than_the_whole_memory_budget_is_a_usage_error(
        live_server, live_server_factory, demo_archive: Path) -> None:
    record = a_record(live_server)
    fits_bytes = _estimate(record, _circle(record, 300))
    png_bytes = _estimate(record, _circle(record, 300), RESPONSEFORMAT="image/png")
    assert png_bytes > fits_bytes  # a preview's float planes are counted too
    server = live_server_factory(demo_archive, limits=Limits(sync_memory_bytes=fits_bytes))
    ok = httpx.get(server.url("sync"), timeout=TIMEOUT, params={
        "ID": record.obs_publisher_did, "CIRCLE": _circle(record, 300)})
    assert ok.status_code == 200 and ok.content.startswith(b"SIMPLE")
    for params in ({"CIRCLE": _circle(record, 300), "RESPONSEFORMAT": "image/png"},
                   {"CIRCLE": [_circle(record, 300), _circle(record, 299)]}):
        response = httpx.get(server.url("sync"), timeout=TIMEOUT, headers=VOTABLE_ERRORS,
                             params={"ID": record.obs_publisher_did, **params})
        assert response.status_code == 400, response.text[:300]
        text = error_text(response)
        assert text.startswith("UsageError:") and "sync_memory_bytes" in text
        assert "/async" in text
    assert server.app.state.sync_memory.used == 0
