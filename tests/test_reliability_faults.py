"""Faults: the server killed mid-job, a full or read-only disk, source files that change.

Nothing is lost: a killed job resumes (or fails with a message), no half-written file is
ever listed, the cache index matches its files; storage failures answer 503 with
Retry-After and the service works again afterwards; a changed source file is never cut
from stale index facts nor served from the cache.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import errno
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from lxml import etree
from server import LiveServer, assert_valid_votable, error_text, query_status

from vo_service.archive.index import run_index
from vo_service.cache import CutoutCache
from vo_service.cache.check import check_cache

REPO = Path(__file__).resolve().parents[1]
UWS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink"}
TIMEOUT = httpx.Timeout(60.0)


# -- the server killed in the middle of a job ---------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server_process(archive: Path, state: Path, port: int, log: Path
                   ) -> Iterator[subprocess.Popen]:
    """``vo-service serve`` in its own process; stopped (SIGTERM) on exit unless dead."""
    command = [sys.executable, "-m", "vo_service.cli", "serve", "--data-root", str(archive),
               "--state-dir", str(state), "--port", str(port)]
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/availability", timeout=2).is_success:
                    break
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def alive_pids() -> set[int]:
    """Processes that are running (not zombies waiting for their parent)."""
    alive = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(int(pid))
    return alive


def descendants(pid: int) -> set[int]:
    """The processes started by ``pid`` and by those, and so on."""
    parents = {}
    for child in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError), \
                open(f"/proc/{child}/stat") as handle:
            parents[int(child)] = int(handle.read().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def catalog_of(archive: Path, count: int) -> bytes:
    """``count`` positions near demo sources in one field (every one inside the images)."""
    with open(archive / "sources.csv", newline="") as handle:
        sources = [row for row in csv.DictReader(handle) if row["field"] == "EDF-FORNAX"]
    rng = np.random.default_rng(7)
    out = io.StringIO()
    out.write("id,ra,dec\n")
    for number, pick in enumerate(rng.integers(0, len(sources), count)):
        ra, dec = float(sources[pick]["ra"]), float(sources[pick]["dec"])
        out.write(f"t{number},{ra + rng.normal(0, 1e-3):.7f},{dec + rng.normal(0, 1e-3):.7f}\n")
    return out.getvalue().encode()


def phase_of(job_url: str) -> str:
    return httpx.get(f"{job_url}/phase", timeout=TIMEOUT).text


def wait_final(job_url: str, seconds: float = 240) -> str:
    deadline = time.monotonic() + seconds
    while (phase := phase_of(job_url)) not in ("COMPLETED", "ERROR", "ABORTED"):
        assert time.monotonic() < deadline, f"job still {phase}"
        httpx.get(job_url, params={"WAIT": "10"}, timeout=TIMEOUT)
    return phase


def assert_complete(path: Path, mime: str) -> None:
    """A result file is whole: FITS with every HDU readable, a ZIP whose CRCs match, a
    valid VOTable."""
    if mime == "application/fits":
        with fits.open(path, memmap=False) as hdul:
            hdul.verify("exception")
            for hdu in hdul:
                _ = hdu.data
    elif mime == "application/zip":
        with zipfile.ZipFile(path) as bundle:
            assert bundle.testzip() is None
    elif "votable" in mime:
        assert_valid_votable(path.read_bytes())


@pytest.mark.slow
def test_a_job_survives_sigkill_of_the_server_and_nothing_half_written_is_listed(
        demo_archive: Path, tmp_path: Path) -> None:
    state, port, log = tmp_path / "state", free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with server_process(demo_archive, state, port, log) as process:
        created = httpx.post(
            f"{base}/async", timeout=TIMEOUT, follow_redirects=False,
            data={"UPLOAD": "cat,param:cat", "SIZE": "48", "PHASE": "RUN",
                  "PRODUCTTYPE": ["BGSUB", "RMS"], "BANDNAME": ["VIS", "NIR-Y", "NIR-J"]},
            files={"cat": ("targets.csv", catalog_of(demo_archive, 1500))})
        assert created.status_code == 303, created.text
        job_url = created.headers["location"]
        deadline = time.monotonic() + 60
        while phase_of(job_url) != "EXECUTING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # stamps are being cut and cached
        assert phase_of(job_url) == "EXECUTING", "the job ended before the kill; make it bigger"
        helpers = descendants(process.pid)  # the forkserver and the job's worker processes
        assert len(helpers) >= 2
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 20  # they end with the server, not wait for ever
        while helpers & alive_pids():
            assert time.monotonic() < deadline, f"left running: {helpers & alive_pids()}"
            time.sleep(0.1)

    # While the server is down: every index row of the cache has its whole file.
    report = check_cache(CutoutCache(state / "cache", 2 * 1024**3), min_age_seconds=0)
    assert report.dropped == [], report.summary()

    with server_process(demo_archive, state, port, log):
        phase = wait_final(job_url)
        if phase == "ERROR":  # allowed, with a message that says what happened
            text = httpx.get(f"{job_url}/error", timeout=TIMEOUT).content
            assert query_status(assert_valid_votable(text))[1]
        assert phase == "COMPLETED", log.read_text()[-2000:]
        results = etree.fromstring(httpx.get(f"{job_url}/results", timeout=TIMEOUT).content)
        listed = results.findall("uws:result", UWS)
        rows = assert_valid_votable(httpx.get(f"{job_url}/results/manifest", timeout=TIMEOUT)
                                    .content).get_first_table().to_table()
        links = [(r.get(f"{{{UWS['xlink']}}}href"), r.get("mime-type"), r.get("size"))
                 for r in listed] + [  # the stamps: reached from the manifest
            (str(row["access_url"]), str(row["content_type"]), int(row["bytes"]))
            for row in rows if row["status"] in ("ok", "partial")]
        assert len(links) > 1000
        job_dir = next((state / "jobs").rglob("manifest.xml")).parent
        for rid, name in (("manifest", "manifest.xml"), ("bundle", "bundle.zip")):
            mime = next(r.get("mime-type") for r in listed if r.get("id") == rid)
            assert_complete(job_dir / name, mime)
        with zipfile.ZipFile(job_dir / "bundle.zip") as bundle:
            stamps = [bundle.read(name) for name in bundle.namelist() if name.endswith(".fits")]
        assert len(stamps) > 1000
        for stamp in stamps:  # every stamp whole (cheaply: FITS blocks, FITS signature)
            assert len(stamp) % 2880 == 0 and stamp[:6] == b"SIMPLE"
        for href, mime, size in links[:: max(1, len(links) // 60)]:  # a sample, over HTTP
            answer = httpx.get(href, timeout=TIMEOUT)
            assert answer.status_code == 200
            if size is not None:
                assert len(answer.content) == int(size)
            path = tmp_path / "sample"
            path.write_bytes(answer.content)
            assert_complete(path, mime)
        manifest = assert_valid_votable(
            httpx.get(f"{job_url}/results/manifest", timeout=TIMEOUT).content)
        statuses = set(manifest.get_first_table().array["status"].tolist())
        assert statuses <= {"ok", "partial", "no-overlap"}, statuses
    report = check_cache(CutoutCache(state / "cache", 2 * 1024**3), min_age_seconds=0)
    assert report.dropped == [] and not report.totals_fixed, report.summary()
    assert check_cache(CutoutCache(state / "cache", 2 * 1024**3)).consistent


# -- a full or read-only disk (in-process fault injection) --------------------------------


@contextlib.contextmanager
def failing_disk(directory: Path, code: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every write under ``directory`` fails with ``code`` (ENOSPC, EROFS, EACCES) while the
    block runs: files opened for writing, created, linked or renamed there. SQLite is not
    touched (it has its own tests for a full disk)."""
    root = str(directory.resolve())
    fault = OSError(code, os.strerror(code))
    real_open, real_os_open = builtins.open, os.open
    real_link, real_replace = os.link, os.replace

    def inside(path: object) -> bool:
        return isinstance(path, str | Path) and os.path.abspath(path).startswith(root) \
            and not str(path).endswith((".sqlite", "-wal", "-shm", "-journal"))

    def guarded_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if inside(file) and any(c in mode for c in "wax+"):
            raise fault
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise fault
        return real_os_open(path, flags, *args, **kwargs)

    def guarded_two(real):  # noqa: ANN001, ANN202
        def call(source, target, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if inside(target):
                raise fault
            return real(source, target, *args, **kwargs)
        return call

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", guarded_open)
        patch.setattr(io, "open", guarded_open)
        patch.setattr(os, "open", guarded_os_open)
        patch.setattr(os, "link", guarded_two(real_link))
        patch.setattr(os, "replace", guarded_two(real_replace))
        yield


def a_record(server: LiveServer):  # -> ImageRecord
    records = server.app.state.index.records(product_type="BGSUB", band="VIS")
    return next(r for r in records if len(r.shape) == 2)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_or_read_only_disk_answers_503_and_the_service_recovers(
        live_server_factory, demo_archive: Path, monkeypatch: pytest.MonkeyPatch,
        code: int) -> None:
    server = live_server_factory(demo_archive)
    record = a_record(server)
    state = server.settings.state_dir

    def cutout(radius: float) -> httpx.Response:
        return httpx.get(server.url("sync"), timeout=TIMEOUT, params={
            "ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} {radius}"})

    def catalog_job() -> httpx.Response:
        return httpx.post(server.url("async"), follow_redirects=False, timeout=TIMEOUT,
                          data={"UPLOAD": "cat,param:cat"},
                          files={"cat": ("t.csv", f"id,ra,dec\na,{record.s_ra},{record.s_dec}\n")})

    pending = catalog_job().headers["location"]  # created while the disk works
    with failing_disk(state, code, monkeypatch):
        httpx.post(f"{pending}/phase", data={"PHASE": "RUN"}, timeout=TIMEOUT)
        assert wait_final(pending, 60) == "ERROR"  # ends with the cause, never stuck
        error = httpx.get(f"{pending}/error", timeout=TIMEOUT).content
        assert os.strerror(code) in query_status(assert_valid_votable(error))[1]
        job = etree.fromstring(httpx.get(pending, timeout=TIMEOUT).content)
        summary = job.find("uws:errorSummary", UWS)
        message = summary.findtext("uws:message", namespaces=UWS)
        assert message.startswith("ServiceUnavailable: ") and message.endswith("retry later")
        assert os.strerror(code) in message and summary.get("type") == "transient"
        for response in (cutout(0.003), catalog_job()):
            assert response.status_code == 503, response.text[-500:]
            assert int(response.headers["retry-after"]) > 0
            text = error_text(response)
            assert text.startswith("ServiceUnavailable:")
            assert os.strerror(code) in text
    # Space is back: the same requests work, and nothing half-written was left behind.
    assert cutout(0.003).status_code == 200
    assert catalog_job().status_code == 303
    assert not list((state / "cache").rglob("*.part"))
    assert check_cache(server.app.state.cache).consistent


def test_sqlite_storage_errors_count_as_storage_failures() -> None:
    import sqlite3

    from vo_service.protocols.dali import storage_failure

    for text in ("database or disk is full", "attempt to write a readonly database"):
        assert storage_failure(sqlite3.OperationalError(text)) == text
    wrapped = RuntimeError("cutting failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "full")
    assert storage_failure(wrapped) == os.strerror(errno.ENOSPC)
    assert storage_failure(sqlite3.OperationalError("no such table: x")) is None
    assert storage_failure(ValueError("a bug")) is None


def test_a_job_failing_on_storage_says_service_unavailable() -> None:
    import sqlite3

    from vo_service.jobs.service import failure_message

    full = failure_message("j1", sqlite3.OperationalError("database or disk is full"))
    assert full == ("ServiceUnavailable: the service could not write the job's files "
                    "(database or disk is full), retry later")
    assert failure_message("j2", ValueError("a bug")) == "Error: ValueError: a bug"


# -- source files that change or disappear after indexing ---------------------------------


def test_a_changed_truncated_or_deleted_source_file_is_never_a_500_or_a_stale_stamp(
        live_server_factory, demo_archive: Path, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    shutil.copytree(demo_archive / "euclid" / "TILE102018211", archive / "euclid" / "T1")
    server = live_server_factory(archive)
    record = a_record(server)
    params = {"ID": record.obs_publisher_did,
              "CIRCLE": f"{record.s_ra} {record.s_dec} 0.002"}
    first = httpx.get(server.url("sync"), params=params, timeout=TIMEOUT)
    assert first.status_code == 200
    original = fits.getdata(io.BytesIO(first.content))

    # Rewritten in place with other pixel values: cut from the new content (the engine
    # reads the WCS from the file), never the old stamp from the cache.
    with fits.open(record.path, mode="update", memmap=False) as hdul:
        hdul[record.hdu].data = hdul[record.hdu].data + 1000
    os.utime(record.path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    changed = httpx.get(server.url("sync"), params=params, timeout=TIMEOUT)
    assert changed.status_code == 200 and changed.headers["x-cache"] == "miss"
    np.testing.assert_allclose(fits.getdata(io.BytesIO(changed.content)), original + 1000)

    # Truncated (a copy in progress): refused the same way, never a 500.
    with open(record.path, "r+b") as handle:
        handle.truncate(record.file_size // 2)
    truncated = httpx.get(server.url("sync"), params=params, timeout=TIMEOUT)
    assert truncated.status_code == 503, truncated.text[-300:]
    text = error_text(truncated)
    assert text.startswith("ServiceUnavailable:") and "changed on disk" in text

    created = httpx.post(server.url("async"), follow_redirects=False, timeout=TIMEOUT,
                         data={"UPLOAD": "cat,param:cat", "PHASE": "RUN",
                               "PRODUCTTYPE": "BGSUB", "BANDNAME": record.band},
                         files={"cat": ("t.csv", f"id,ra,dec\na,{record.s_ra},{record.s_dec}\n")})
    job_url = created.headers["location"]
    assert wait_final(job_url, 60) in ("COMPLETED", "ERROR")
    manifest = assert_valid_votable(
        httpx.get(f"{job_url}/results/manifest", timeout=TIMEOUT).content).get_first_table()
    rows = [row for row in manifest.array if row["image_id"] == record.obs_publisher_did]
    assert rows and all("changed on disk" in str(row["message"]) for row in rows)

    # Deleted: 404 on sync and on the file link, until the index forgets it.
    record.path.unlink()
    gone = httpx.get(server.url("sync"), params=params, timeout=TIMEOUT)
    assert gone.status_code == 404
    assert "no longer available" in error_text(gone)
    run_index(server.settings)
    forgotten = httpx.get(server.url("sync"), params=params, timeout=TIMEOUT)
    assert forgotten.status_code == 404
    assert "not in this archive" in error_text(forgotten)


def test_vo_service_check_repairs_a_damaged_cache(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from vo_service.cli import main

    state = tmp_path / "state"
    cache = CutoutCache(state / "cache", 10**6)
    cache.put("ab" * 32, b"stamp" * 100)
    cache.put("cd" * 32, b"other" * 100)
    cache.path_for("ab" * 32).write_bytes(b"torn")
    assert main(["check", "--state-dir", str(state)]) == 1
    assert "1 dropped" in capsys.readouterr().out
    assert main(["check", "--state-dir", str(state)]) == 0
    assert cache.get("cd" * 32) is not None and cache.get("ab" * 32) is None
