"""``vo-service serve --workers 2``: two server processes on one state directory.

The real command runs on a loopback port; the client opens a new connection for every
request, so requests land on either process. Which process answered shows in the log:
worker processes put their process id in every log line, and the one running the jobs
holds (and names itself in) ``jobs/runner.lock``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from astropy.io import fits
from uws_client import UWS, job_document, phase_of, results_of, wait_final

from vo_service.archive.index import ArchiveIndex

pytestmark = pytest.mark.slow
STARTUP_SECONDS = 120
WAITERS = 8  # blocking WAITs at once: some land on the process that does not run the job


@dataclass
class Workers:
    """The running ``vo-service serve --workers 2`` command."""

    base_url: str
    state_dir: Path
    log_path: Path
    process: subprocess.Popen

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def log(self) -> str:
        return self.log_path.read_text()

    def runner_pid(self) -> int:
        return int((self.state_dir / "jobs" / "runner.lock").read_text())

    def pids_logging(self, pattern: str) -> Counter:
        """How many log lines matching ``pattern`` each worker process wrote."""
        return Counter(int(pid) for pid in re.findall(rf"\[(\d+)\] {pattern}", self.log()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def workers(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    state_dir = tmp_path_factory.mktemp("workers-state")
    port = free_port()
    log_path = state_dir / "serve.log"
    # A WAIT may block for 10 minutes: one that misses a phase change made by the other
    # process hangs past the client's timeout instead of returning at the cap.
    environment = {**os.environ, "VO_SERVICE_LIMIT_WAIT_CAP_SECONDS": "600"}
    environment.pop("VO_SERVICE_CONFIG", None)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vo_service.cli", "serve", "--workers", "2",
             "--data-root", str(demo_archive), "--state-dir", str(state_dir),
             "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = Workers(f"http://127.0.0.1:{port}", state_dir, log_path, process)
    deadline = time.monotonic() + STARTUP_SECONDS
    while server.log().count("Application startup complete") < 2:
        assert process.poll() is None, server.log()
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    yield server
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:  # requests still blocking: do not leave it behind
        process.kill()
        process.wait(timeout=60)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A client that opens a new connection for every request (either process answers)."""
    with httpx.Client(timeout=120, follow_redirects=True,
                      limits=httpx.Limits(max_keepalive_connections=0)) as http:
        yield http


def small_catalog(demo_archive: Path, rows: int = 20) -> bytes:
    with open(demo_archive / "sources.csv", newline="") as handle:
        sources = list(csv.DictReader(handle))[:rows]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "ra", "dec"])
    for source in sources:
        writer.writerow([f"src{source['id']}", source["ra"], source["dec"]])
    return out.getvalue().encode()


def test_both_processes_cut_and_share_one_cache(workers: Workers, client: httpx.Client) -> None:
    record = ArchiveIndex(workers.state_dir / "index.sqlite").records(
        band="VIS", product_type="BGSUB")[0]
    params = {"ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} 0.002"}
    first = client.get(workers.url("sync"), params={**params, "RUNID": "shared-0"})
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    assert fits.open(io.BytesIO(first.content))[0].data is not None
    answers = []
    for number in range(1, 200):  # until both processes have answered
        response = client.get(workers.url("sync"), params={**params, "RUNID": f"shared-{number}"})
        answers.append(response)
        if len(workers.pids_logging("vo_service.protocols.soda: sync runid=shared-")) == 2:
            break
    assert len(workers.pids_logging("vo_service.protocols.soda: sync runid=shared-")) == 2
    assert {response.status_code for response in answers} == {200}
    # the stamp one process made is a hit in the other: one cache index for both
    assert {response.headers["x-cache"] for response in answers} == {"hit"}
    assert {response.content for response in answers} == {first.content}


def test_catalog_job_created_in_one_process_runs_once_in_the_runner(
    workers: Workers, client: httpx.Client, demo_archive: Path
) -> None:
    runner = workers.runner_pid()
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB",
            "SIZE": "16", "RUNID": "two-processes"}
    files = {"cat": ("targets.csv", small_catalog(demo_archive), "text/csv")}
    for _ in range(50):  # until the process that does not run jobs created one
        url = str(client.post(workers.url("async"), data=data, files=files).url)
        job_id = url.rsplit("/", 1)[1]
        (creator,) = workers.pids_logging(f"vo_service.jobs.service: job {job_id} created")
        if creator != runner:
            break
        assert client.delete(url).status_code in (200, 303)
    assert creator != runner

    def wait_while_pending(_: int) -> str:
        return phase_of(job_document(client, url, WAIT="-1", PHASE="PENDING"))

    with ThreadPoolExecutor(WAITERS) as pool:
        waits = [pool.submit(wait_while_pending, k) for k in range(WAITERS)]
        time.sleep(0.5)  # most WAITs are blocking by now; later ones return at once
        assert client.post(f"{url}/phase", data={"PHASE": "RUN"}).status_code == 200
        # each WAIT ends when the job leaves PENDING, in whichever process it waits
        assert all(wait.result() != "PENDING" for wait in waits)

    root = wait_final(client, url, wait="-1")
    assert phase_of(root) == "COMPLETED"
    finished = workers.pids_logging(
        rf"vo_service.jobs.service: job {job_id} \(runid=two-processes\) COMPLETED")
    assert finished == Counter({runner: 1})  # run once, by the runner
    results = [r.get("id") for r in root.iterfind("uws:results/uws:result", UWS)]
    assert len(results) == len(set(results)) > 2  # manifest, bundle, coverage; no duplicates
    manifest = client.get(results_of(root)["manifest"][0])
    assert manifest.status_code == 200

    listings = {client.get(workers.url("async")).text for _ in range(10)}
    assert len(listings) == 1  # the same job list from both processes
    assert job_id in listings.pop()


def test_another_process_takes_over_the_jobs_when_the_runner_dies(
    workers: Workers, client: httpx.Client
) -> None:
    record = ArchiveIndex(workers.state_dir / "index.sqlite").records(
        band="VIS", product_type="BGSUB")[0]
    old_runner = workers.runner_pid()
    os.kill(old_runner, signal.SIGKILL)
    data = {"ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} 0.002",
            "PHASE": "RUN"}
    for _ in range(50):  # the dead process's connections fail until uvicorn replaced it
        try:
            url = str(client.post(workers.url("async"), data=data).url)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    assert phase_of(wait_final(client, url, wait="-1")) == "COMPLETED"
    assert workers.runner_pid() != old_runner
