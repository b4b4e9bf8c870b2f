"""A really full disk: the state directory on a small tmpfs that the test fills up.

A job that runs out of space ends in ERROR saying so (never EXECUTING for ever), WAIT and
the execution-duration timer still work, ABORT and DELETE work and DELETE frees space,
`vo-service serve` starts on a full disk, the cache shrinks before the disk fills, and
each failure is one log line. Mounting needs root (CI runs as root); elsewhere the tests
are skipped, under CI=true they fail.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import IN_CI
from lxml import etree
from server import LiveServer, assert_valid_votable, error_text, query_status, serve_archive
from test_reliability_faults import free_port, server_process
from uws_client import UWS, phase_of, wait_final, wait_for_results

from vo_service.config import Limits

TIMEOUT = httpx.Timeout(60.0)
MiB = 1024**2
NO_SPACE = ("No space left on device", "database or disk is full")


# -- a small file system that fills up ------------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where`` for the block (unmounted after)."""
    where.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk has not one free block left; returns it."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (MiB, 64 * 1024, 4096):
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, bytes(chunk))
    finally:
        os.close(descriptor)
    assert free(disk) < 4096
    return filler


def free(disk: Path) -> int:
    return shutil.disk_usage(disk).free


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB file system for the state directory."""
    with small_disk(tmp_path / "disk", 64 * MiB) as mounted:
        yield mounted


@pytest.fixture
def failures_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every log record of the test, uvicorn's own included (it does not propagate)."""
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    try:
        yield caplog
    finally:
        uvicorn.removeHandler(caplog.handler)


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """Failures of the disk are one line each: no traceback, no uvicorn 500."""
    noisy = [r.getMessage() for r in caplog.records
             if r.exc_info or "Exception in ASGI application" in r.getMessage()]
    assert not noisy, noisy


def catalog(archive: Path, count: int) -> bytes:
    """``count`` positions near demo sources of one field."""
    with open(archive / "sources.csv", newline="") as handle:
        sources = [row for row in csv.DictReader(handle) if row["field"] == "EDF-FORNAX"]
    rng = np.random.default_rng(11)
    lines = ["id,ra,dec"]
    for number, pick in enumerate(rng.integers(0, len(sources), count)):
        lines.append(f"t{number},{float(sources[pick]['ra']) + rng.normal(0, 1e-3):.7f},"
                     f"{float(sources[pick]['dec']) + rng.normal(0, 1e-3):.7f}")
    return ("\n".join(lines) + "\n").encode()


def create_job(server: LiveServer, archive: Path, targets: int, **params: object) -> str:
    created = httpx.post(server.url("async"), follow_redirects=False, timeout=TIMEOUT,
                         data={"UPLOAD": "cat,param:cat", **params},
                         files={"cat": ("targets.csv", catalog(archive, targets))})
    assert created.status_code == 303, created.text
    return created.headers["location"]


def job_root(url: str, **query: str) -> etree._Element:
    answer = httpx.get(url, params=query, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text[-500:]
    return etree.fromstring(answer.content)


def read_job(client: httpx.Client, url: str, **query: str) -> etree._Element:
    return job_root(url, **query)


def error_summary(root: etree._Element) -> tuple[str | None, str]:
    summary = root.find("uws:errorSummary", UWS)
    return summary.get("type"), summary.findtext("uws:message", namespaces=UWS)


def result_size(root: etree._Element, result_id: str) -> int:
    return int(next(r.get("size") for r in root.iterfind("uws:results/uws:result", UWS)
                    if r.get("id") == result_id))


def served(disk: Path, archive: Path, **limits: int) -> contextlib.AbstractContextManager:
    """The demo archive served with its state directory on ``disk``."""
    return serve_archive(archive, disk / "state", limits=Limits(
        state_reserve_bytes=limits.pop("state_reserve_bytes", 4 * MiB),
        cache_min_free_bytes=limits.pop("cache_min_free_bytes", 8 * MiB), **limits))


# -- jobs on a full disk ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_job_that_runs_out_of_space_ends_in_error_and_abort_and_delete_work(
        disk: Path, demo_archive: Path, failures_log: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vo_service.jobs.service.SWEEP_SECONDS", 3600)  # no reserve refill
    client = httpx.Client(timeout=TIMEOUT)
    with served(disk, demo_archive) as server:
        finished = create_job(server, demo_archive, 150, PHASE="RUN", SIZE="64",
                              PRODUCTTYPE=["BGSUB", "RMS"], BANDNAME="VIS")
        assert phase_of(wait_final(client, finished, read=read_job)) == "COMPLETED"
        bundle_size = result_size(job_root(finished), "bundle")
        pending = create_job(server, demo_archive, 5)
        running = create_job(server, demo_archive, 1500, PHASE="RUN", SIZE="48",
                             PRODUCTTYPE=["BGSUB", "RMS"], BANDNAME=["VIS", "NIR-Y", "NIR-J"])
        wait_for_results(client, running, 20)
        assert phase_of(job_root(running)) == "EXECUTING", "the job ended before the disk filled"
        fill(disk)

        # The job stops for lack of space, says why, and WAIT returns with it.
        root = wait_final(client, running, read=read_job)
        assert phase_of(root) == "ERROR"
        kind, message = error_summary(root)
        assert kind == "transient" and message.startswith("ServiceUnavailable: ")
        assert any(cause in message for cause in NO_SPACE), message
        error = httpx.get(f"{running}/error", timeout=TIMEOUT)
        assert query_status(assert_valid_votable(error.content))[1] == message

        # ABORT and DELETE still answer 303 and do what they say.
        aborted = httpx.post(f"{pending}/phase", data={"PHASE": "ABORT"}, timeout=TIMEOUT)
        assert aborted.status_code == 303, aborted.text[-500:]
        assert phase_of(job_root(pending)) == "ABORTED"
        before = free(disk)
        deleted = httpx.delete(finished, timeout=TIMEOUT)
        assert deleted.status_code == 303, deleted.text[-500:]
        assert httpx.get(finished, timeout=TIMEOUT).status_code == 404
        assert free(disk) - before > bundle_size // 2, "deleting the job freed no space"
        listed = job_root(server.url("async"))
        assert finished.rsplit("/", 1)[1] not in {
            ref.get("id") for ref in listed.iterfind("uws:jobref", UWS)}
        for filler in disk.glob("filler-*"):  # space again: what waited in memory is
            filler.unlink()                   # written at the latest when the server stops
    assert_no_tracebacks(failures_log)

    # Written to the database, not only shown from memory: the same after a restart.
    with served(disk, demo_archive) as again:
        def moved(url: str) -> str:  # the same job on the new server's port
            return again.url(f"async/{url.rsplit('/', 1)[1]}")

        assert httpx.get(moved(finished), timeout=TIMEOUT).status_code == 404
        assert phase_of(job_root(moved(pending))) == "ABORTED"
        assert error_summary(job_root(moved(running))) == (kind, message)


class HoldingKind:
    """A job kind that runs until it is stopped, writing nothing (a test double)."""

    name = "holding"

    def validate(self, parameters: object, uploads: object) -> None:
        return None

    def check_ready(self, parameters: object, uploads: object) -> None:
        return None

    def run(self, context) -> None:  # noqa: ANN001
        context._abort.wait()


@pytest.mark.slow
def test_the_execution_duration_and_wait_work_with_no_byte_free_and_no_reserve(
        disk: Path, demo_archive: Path, failures_log: pytest.LogCaptureFixture) -> None:
    with served(disk, demo_archive, state_reserve_bytes=0) as server:
        service = server.app.state.job_service
        service.kinds["holding"] = HoldingKind()
        service.choose_kind = lambda parameters: "holding"
        created = httpx.post(server.url("async"), data={"RUNID": "hold"},
                             follow_redirects=False, timeout=TIMEOUT)
        job = created.headers["location"]
        httpx.post(f"{job}/executionduration", data={"EXECUTIONDURATION": "2"}, timeout=TIMEOUT)
        httpx.post(f"{job}/phase", data={"PHASE": "RUN"}, timeout=TIMEOUT)
        assert phase_of(job_root(job, WAIT="30", PHASE="QUEUED")) == "EXECUTING"
        filler = fill(disk)

        # The timer aborts it though nothing can be written: WAIT returns, the phase shows.
        root = job_root(job, WAIT="30")
        assert phase_of(root) == "ABORTED"
        assert "exceeded its execution duration of 2 s" in error_summary(root)[1]
        assert httpx.delete(job, timeout=TIMEOUT).status_code == 303
        assert httpx.get(job, timeout=TIMEOUT).status_code == 404
        assert httpx.get(server.url("async"), timeout=TIMEOUT).text.count("jobref") == 0
        filler.unlink()  # space again: written at the latest when the server stops
    assert_no_tracebacks(failures_log)
    with served(disk, demo_archive) as again:
        assert httpx.get(again.url(f"async/{job.rsplit('/', 1)[1]}"),
                         timeout=TIMEOUT).status_code == 404


# -- the cache on a filling disk ---------------------------------------------------------------


def test_the_cache_leaves_its_margin_free_instead_of_filling_the_disk(
        tmp_path: Path, demo_archive: Path) -> None:
    size, margin = 40 * MiB, 8 * MiB
    with small_disk(tmp_path / "disk", size) as disk, served(
            disk, demo_archive, cache_min_free_bytes=margin, state_reserve_bytes=0) as server:
        available = free(disk)  # what the index and job store leave for the cache
        records = [r for r in server.app.state.index.records() if len(r.shape) == 2]
        sizes: list[int] = []
        for record in records:  # whole images of mixed sizes, until past the free space
            if sum(sizes) > available:
                break
            answer = httpx.get(server.url("sync"), timeout=TIMEOUT, params={
                "ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} 0.1"})
            assert answer.status_code == 200, answer.text[-300:]
            sizes.append(len(answer.content))
            assert free(disk) > margin // 2, f"{len(sizes)} cutouts: {free(disk)} bytes free"
        assert sum(sizes) > available, "the cutouts were too small to test anything"
        stats = server.app.state.cache.stats()
        assert 0 < stats.entries < len(sizes) and stats.total_bytes <= available - margin // 2


# -- `vo-service serve` on a full disk ---------------------------------------------------------


@pytest.mark.slow
def test_serve_starts_on_a_full_state_disk_and_answers_503_where_it_must_write(
        disk: Path, demo_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VO_SERVICE_LIMIT_STATE_RESERVE_BYTES", str(4 * MiB))
    monkeypatch.setenv("VO_SERVICE_LIMIT_CACHE_MIN_FREE_BYTES", str(8 * MiB))
    state, port, log = disk / "state", free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with server_process(demo_archive, state, port, log):  # index, one cached cutout
        records = httpx.get(f"{base}/query", params={"MAXREC": "200"}, timeout=TIMEOUT)
        table = assert_valid_votable(records.content).get_first_table().array
        row = next(r for r in table if r["dataproduct_type"] == "image")
        did, ra, dec = str(row["obs_publisher_did"]), float(row["s_ra"]), float(row["s_dec"])
        cached = {"ID": did, "CIRCLE": f"{ra} {dec} 0.002"}
        assert httpx.get(f"{base}/sync", params=cached, timeout=TIMEOUT).status_code == 200
    fill(disk)
    started_at = log.stat().st_size

    with server_process(demo_archive, state, port, log):
        text = log.read_text()[started_at:]
        assert "serving the archive index read-only" in text and "cannot rollback" not in text
        query = httpx.get(f"{base}/query", params={"ID": did}, timeout=TIMEOUT)
        assert len(assert_valid_votable(query.content).get_first_table().array) == 1
        hit = httpx.get(f"{base}/sync", params=cached, timeout=TIMEOUT)
        assert hit.status_code == 200 and hit.headers["x-cache"] == "hit"
        refused = [
            httpx.get(f"{base}/sync", params={"ID": did, "CIRCLE": f"{ra} {dec} 0.1"},
                      timeout=TIMEOUT),
            httpx.get(f"{base}/preview", params={"ID": did}, timeout=TIMEOUT),
            httpx.post(f"{base}/async", data={"UPLOAD": "cat,param:cat"}, timeout=TIMEOUT,
                       files={"cat": ("t.csv", catalog(demo_archive, 2000))}),
        ]
        for answer in refused:
            assert answer.status_code == 503, answer.text[-500:]
            assert int(answer.headers["retry-after"]) > 0
            message = error_text(answer)  # text/plain on /sync, else a DALI VOTable
            assert message.startswith("ServiceUnavailable:")
            assert any(cause in message for cause in NO_SPACE), message
        for filler in disk.glob("filler-*"):
            filler.unlink()
        # Space again: the same requests work without a restart.
        again = httpx.get(f"{base}/preview", params={"ID": did}, timeout=TIMEOUT)
        assert again.status_code == 200 and again.headers["content-type"] == "image/png"
    text = log.read_text()[started_at:]
    assert "Traceback" not in text, text[-3000:]
    assert text.count("storage failure on") == len(refused), text[-3000:]
