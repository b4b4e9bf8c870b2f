"""Load test: 16 concurrent sync clients and 4 concurrent catalog jobs against one server.

Bounded and local: the real service (``vo-service serve``) runs on 127.0.0.1 in its own
process over the demo archive (built once under ``benchmarks/data/``) with an empty cache;
each sync client sends a fixed number of ``GET /sync`` cutouts (half new positions, half
repeats that the cache answers), while four catalog (UPLOAD) jobs run to completion. Then
the server is stopped. Prints throughput, latency percentiles, errors (anything but
200/204; must be zero), 503 answers and the peak resident memory of the server process
(sampled with its children every 0.1 s).

    .venv/bin/python benchmarks/load_test.py [--clients 16] [--requests 100] [--jobs 4]
                                             [--targets 500]

Exit status 1 when any request or job failed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import http_sync  # noqa: E402 - the archive, port and request helpers of the sync benchmark
from _server import start_server_process  # noqa: E402

STATE = http_sync.DATA / "load-test-state"
BANDS = ["VIS", "NIR-Y", "NIR-J", "NIR-H"]


def start_server(port: int) -> subprocess.Popen:
    """``vo-service serve`` over the demo archive with an empty state directory."""
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    return start_server_process(
        [sys.executable, "-m", "vo_service.cli", "serve", "--data-root", str(http_sync.ARCHIVE),
         "--state-dir", str(STATE), "--host", "127.0.0.1", "--port", str(port)],
        port, STATE / "server.log")


class MemoryPeak(threading.Thread):
    """Samples the resident memory of a process and its children until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                return


def catalog(count: int, seed: int) -> bytes:
    """``count`` targets near demo sources (a few arcsec of jitter), as CSV."""
    with open(http_sync.ARCHIVE / "sources.csv", newline="") as handle:
        sources = [row for row in csv.DictReader(handle) if row["field"] == "EDF-FORNAX"]
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    out.write("id,ra,dec\n")
    for number, pick in enumerate(rng.integers(0, len(sources), count)):
        ra = float(sources[pick]["ra"]) + rng.normal(0, 3 / 3600)
        dec = float(sources[pick]["dec"]) + rng.normal(0, 3 / 3600)
        out.write(f"j{seed}-{number},{ra:.7f},{dec:.7f}\n")
    return out.getvalue().encode()


async def sync_client(client: httpx.AsyncClient, requests: list[tuple[str, str]],
                      latencies: list[float], statuses: dict[int, int]) -> None:
    for did, circle in requests:
        started = time.perf_counter()
        try:
            response = await client.get("/sync", params={"ID": did, "CIRCLE": circle})
            status = response.status_code
        except httpx.HTTPError:
            status = -1
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1


async def batch_job(client: httpx.AsyncClient, number: int, targets: int) -> dict:
    started = time.perf_counter()
    response = await client.post(
        "/async", data={"UPLOAD": "cat,param:cat", "SIZE": "64", "PRODUCTTYPE": "BGSUB",
                        "BANDNAME": BANDS, "PHASE": "RUN"},
        files={"cat": (f"job{number}.csv", catalog(targets, number))})
    if response.status_code != 303:
        return {"phase": f"HTTP {response.status_code}", "wall_s": 0.0, "results": 0}
    job_url = response.headers["location"]
    phase = ""
    while phase not in ("COMPLETED", "ERROR", "ABORTED"):
        await client.get(job_url, params={"WAIT": "5"})
        phase = (await client.get(f"{job_url}/phase")).text
    wall = time.perf_counter() - started
    results = (await client.get(f"{job_url}/results")).text.count("<uws:result ")
    return {"phase": phase, "wall_s": wall, "results": results}


async def run(base: str, args: argparse.Namespace, requests: list[tuple[str, str]]) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=args.clients + args.jobs + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        per_client = [requests[i::args.clients] for i in range(args.clients)]
        started = time.perf_counter()
        sync_task = asyncio.gather(*(sync_client(client, chunk, latencies, statuses)
                                     for chunk in per_client))
        job_task = asyncio.gather(*(batch_job(client, n, args.targets)
                                    for n in range(args.jobs)))
        await sync_task
        sync_wall = time.perf_counter() - started
        jobs = await job_task
        total_wall = time.perf_counter() - started
    return {"latencies": latencies, "statuses": statuses, "sync_wall": sync_wall,
            "jobs": jobs, "total_wall": total_wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=100, help="per sync client")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--targets", type=int, default=500, help="targets per catalog job")
    args = parser.parse_args()

    http_sync.ensure_archive()
    port = http_sync.free_port()
    process = start_server(port)
    memory = MemoryPeak(process.pid)
    memory.start()
    try:
        http_sync.STATE = STATE  # vis_images reads the index of this server
        images = http_sync.vis_images()
        rng = np.random.default_rng(3)
        total = args.clients * args.requests
        fresh = http_sync.circles(images, 64, total - total // 2, rng)
        repeats = [fresh[i] for i in rng.integers(0, min(len(fresh), 64), total // 2)]
        requests = fresh + repeats
        rng.shuffle(requests)
        figures = asyncio.run(run(f"http://127.0.0.1:{port}", args, requests))
    finally:
        memory.done.set()
        memory.join()
        process.terminate()
        process.wait(timeout=60)

    latencies = np.array(figures["latencies"]) * 1000
    statuses = figures["statuses"]
    errors = sum(n for status, n in statuses.items() if status not in (200, 204, 503))
    job_errors = sum(job["phase"] != "COMPLETED" for job in figures["jobs"])
    print(f"load test: {args.clients} sync clients x {args.requests} requests (64 px, half "
          f"repeats) + {args.jobs} catalog jobs x {args.targets} targets x {len(BANDS)} bands, "
          f"loopback, {psutil.cpu_count()} CPUs")
    print(f"  sync: {len(latencies)} requests in {figures['sync_wall']:.1f} s = "
          f"{len(latencies) / figures['sync_wall']:.0f} req/s; latency p50 "
          f"{np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms, "
          f"p99 {np.percentile(latencies, 99):.0f} ms, max {latencies.max():.0f} ms")
    print(f"  sync answers: {dict(sorted(statuses.items()))}; errors {errors}, "
          f"busy (503) {statuses.get(503, 0)}")
    for number, job in enumerate(figures["jobs"]):
        print(f"  job {number}: {job['phase']} in {job['wall_s']:.1f} s, "
              f"{job['results']} results")
    print(f"  all done in {figures['total_wall']:.1f} s; job errors {job_errors}; "
          f"peak server RSS {memory.peak / 2**20:.0f} MB")
    return 1 if errors or job_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
