"""Benchmark: SODA sync cutouts over HTTP under concurrent load, cache miss vs hit.

Builds (once) the demo archive under ``benchmarks/data/`` (git-ignored), indexes it, starts
the real application under uvicorn on 127.0.0.1 in a separate process with an empty cutout
cache, and times ``GET /sync`` from 1, 4 and 16 concurrent httpx async clients for 64x64 and
256x256 stamps of the float32 VIS mosaics:

- miss: every request asks for a new position (a cutout is computed and stored);
- hit: the same few requests again (verified file from the cache).

It prints latency p50/p95, requests/s and MB/s per setting, the hit/miss speed ratio, and
the in-process engine time of the same stamps (FITS bytes, no HTTP, no cache) opening the
file per stamp ("reopen", as astrocut does) and with the image kept open ("kept", the floor).

``--workers 1 2`` runs everything once per number of server processes (``vo-service serve
--workers N``, each time from an empty cache) and prints the requests/s of N processes over
one. The load generator is one more process on the same machine: on two cores it competes
with the server processes for them. ``--rounds R`` repeats the whole sequence (1, 2, 1, 2,
...) and compares the best requests/s of each setting, which tames a noisy shared machine.

Run: ``.venv/bin/python benchmarks/http_sync.py [--requests 200] [--clients 1 4 16]
[--workers 1 2] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _server import start_server_process  # noqa: E402 - shared with load_test.py

DATA = HERE / "data"
ARCHIVE = DATA / "demo-archive"
STATE = DATA / "http-sync-state"
SERVER_CODE = """
import logging, sys
from dataclasses import replace
from pathlib import Path
from vo_service.archive.index import run_index
from vo_service.config import Settings
from vo_service.serving import serve
settings = replace(Settings(), data_roots=(Path(sys.argv[1]),), state_dir=Path(sys.argv[2]),
                   host="127.0.0.1", port=int(sys.argv[3]), workers=int(sys.argv[4]))
run_index(settings)
logging.basicConfig(level=logging.INFO)
serve(settings, log_level=logging.INFO, access_log=False)
"""


def ensure_archive() -> None:
    """The demo archive, built once (``.complete`` marks a finished build)."""
    if (ARCHIVE / ".complete").exists():
        return
    from vo_service.archive.demo import build_demo_archive

    shutil.rmtree(ARCHIVE, ignore_errors=True)
    print(f"building the demo archive in {ARCHIVE} ...", flush=True)
    build_demo_archive(ARCHIVE)
    (ARCHIVE / ".complete").touch()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, workers: int) -> subprocess.Popen:
    """The service in its own process(es) (so the load generator does not share a GIL),
    once every worker process has started."""
    shutil.rmtree(STATE / "cache", ignore_errors=True)  # start with an empty cache
    STATE.mkdir(parents=True, exist_ok=True)
    log = STATE / "server.log"
    server = start_server_process([sys.executable, "-c", SERVER_CODE, str(ARCHIVE), str(STATE),
                                   str(port), str(workers)], port, log)
    deadline = time.monotonic() + 120
    while log.read_text().count("Application startup complete") < workers:
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"not every worker process started; see {log}")
        time.sleep(0.2)
    return server


def vis_images():
    """(DID, path, hdu, centre, pixel scale in deg) of the plain VIS science mosaics."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    from vo_service.archive.index import ArchiveIndex

    index = ArchiveIndex(STATE / "index.sqlite")
    images = []
    for record in index.records(band="VIS", product_type="BGSUB"):
        if len(record.shape) != 2 or min(record.shape) < 600:
            continue
        with fits.open(record.path) as hdul:
            if isinstance(hdul[record.hdu], fits.CompImageHDU):
                continue
            wcs = WCS(hdul[record.hdu].header).celestial
        scale = float(np.mean(proj_plane_pixel_scales(wcs)))
        images.append((record.obs_publisher_did, record.path, record.hdu,
                       (record.s_ra, record.s_dec), scale, wcs, record.shape))
    index.close()
    if not images:
        raise RuntimeError("no plain VIS BGSUB mosaic in the demo archive")
    return images


def circles(images, side: int, count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``count`` (ID, CIRCLE) requests whose stamps are ``side`` pixels across, inside."""
    requests = []
    for k in range(count):
        did, _, _, _, scale, wcs, shape = images[k % len(images)]
        margin = side
        x = rng.uniform(margin, shape[1] - margin)
        y = rng.uniform(margin, shape[0] - margin)
        ra, dec = wcs.pixel_to_world_values(x, y)
        radius = (side / 2 - 0.5) * scale
        requests.append((did, f"{float(ra) % 360:.8f} {float(dec):.8f} {radius:.8f}"))
    return requests


async def run_load(base: str, requests: list[tuple[str, str]], clients: int
                   ) -> tuple[list[float], float, int, dict[str, int]]:
    """Send ``requests`` with ``clients`` concurrent connections; latencies (s), wall time,
    bytes received and the X-Cache / status counts."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    latencies: list[float] = []
    counts: dict[str, int] = {}
    received = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal received
        while not queue.empty():
            did, circle = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await client.get(f"{base}/sync",
                                            params={"ID": did, "CIRCLE": circle})
            except httpx.TransportError as error:  # counted, not timed: the run goes on
                label = type(error).__name__
                counts[label] = counts.get(label, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)
            received += len(response.content)
            label = response.headers.get("x-cache", str(response.status_code))
            counts[label] = counts.get(label, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - started
    return latencies, wall, received, counts


def engine_floor(images, side: int, count: int, rng: np.random.Generator
                 ) -> tuple[list[float], list[float]]:
    """In-process time of the same kind of stamp (engine cut + FITS bytes, no HTTP, no
    cache): opening the file for each stamp (as astrocut does), and with the image kept
    open (as the service's image pool does)."""
    from vo_service.engine.batch import cut_many, iter_cutouts
    from vo_service.engine.reading import OpenImage
    from vo_service.protocols.dali import parse_circle

    paths = {did: (path, hdu) for did, path, hdu, *_ in images}
    requests = circles(images, side, count + 5, rng)
    reopen, kept = [], []
    opened = {did: OpenImage(*paths[did]) for did in paths}
    for k, (did, circle) in enumerate(requests):
        region = parse_circle(circle)
        started = time.perf_counter()
        cut_many(*paths[did], [region])[0].fits_bytes()
        middle = time.perf_counter()
        next(iter_cutouts(opened[did], [region])).fits_bytes()
        if k >= 5:  # the first calls warm imports and the page cache
            reopen.append(middle - started)
            kept.append(time.perf_counter() - middle)
    for image in opened.values():
        image.close()
    return reopen, kept


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0


def measure_server(workers: int, images, args: argparse.Namespace,
                   rng: np.random.Generator) -> list[tuple]:
    """Rows (workers, side, mode, clients, n, p50, p95, req/s, MB/s, counts) of one server
    run with ``workers`` processes, from an empty cache."""
    port = free_port()
    started = time.perf_counter()
    server = start_server(port, workers)
    print(f"server with {workers} worker process(es) up on 127.0.0.1:{port} in "
          f"{time.perf_counter() - started:.1f} s (pid {server.pid}, {os.cpu_count()} cores)",
          flush=True)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for side in args.sizes:
            hot = circles(images, side, args.hit_set, rng)
            asyncio.run(run_load(base, hot, 1))  # warm the hit set
            for clients in args.clients:
                for mode in ("miss", "hit"):
                    if mode == "miss":
                        batch = circles(images, side, args.requests, rng)
                    else:
                        batch = [hot[k % len(hot)] for k in range(args.requests)]
                    latencies, wall, received, counts = asyncio.run(
                        run_load(base, batch, clients))
                    rows.append((workers, side, mode, clients, len(latencies),
                                 percentile(latencies, 50), percentile(latencies, 95),
                                 len(latencies) / wall, received / wall / 1e6, counts))
    finally:
        server.terminate()
        server.wait(timeout=60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per setting")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--hit-set", type=int, default=20,
                        help="distinct requests repeated in the hit runs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="server processes (vo-service serve --workers N), one run each")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the runs of every --workers value, interleaved")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    ensure_archive()
    if not (STATE / "index.sqlite").exists():
        from vo_service.archive.index import run_index
        from vo_service.config import Settings

        run_index(Settings(data_roots=(ARCHIVE,), state_dir=STATE))
    images = vis_images()
    rows = []
    for side in args.sizes:
        for name, floor in zip(("reopen", "kept"), engine_floor(images, side, 50, rng),
                               strict=True):
            rows.append((0, side, name, 1, len(floor), percentile(floor, 50),
                         percentile(floor, 95), len(floor) / sum(floor), None, {}))
    for _ in range(args.rounds):
        for workers in args.workers:
            rows += measure_server(workers, images, args, rng)
    print()
    print(f"{'workers':>7} {'stamp':>7} {'path':>6} {'clients':>7} {'n':>5} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'req/s':>8} {'MB/s':>7}  responses")
    for workers, side, mode, clients, n, p50, p95, rate, mbps, counts in rows:
        mb = f"{mbps:7.1f}" if mbps is not None else f"{'-':>7}"
        shown = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        print(f"{workers or '-':>7} {side:>4}px² {mode:>6} {clients:>7} {n:>5} {p50:8.2f} "
              f"{p95:8.2f} {rate:8.1f} {mb}  {shown}")
    print()

    def best(key: tuple) -> tuple:
        """The row of the highest req/s among the rounds of one setting."""
        return max((r for r in rows if r[:4] == key), key=lambda r: r[7])

    for workers in args.workers:
        for side in args.sizes:
            reopen_p50 = next(r for r in rows if r[1:3] == (side, "reopen"))[5]
            for clients in args.clients:
                miss = best((workers, side, "miss", clients))
                hit = best((workers, side, "hit", clients))
                print(f"{workers} worker(s), {side}px², {clients:>2} clients: throughput "
                      f"hit/miss x{hit[7] / miss[7]:.2f}; p50 over HTTP / engine opening the "
                      f"file: miss x{miss[5] / reopen_p50:.2f}, hit x{hit[5] / reopen_p50:.2f}")
    first = args.workers[0]
    for workers in args.workers[1:]:
        print()
        for side in args.sizes:
            for clients in args.clients:
                for mode in ("miss", "hit"):
                    one = best((first, side, mode, clients))
                    more = best((workers, side, mode, clients))
                    print(f"{side}px² {mode:>4}, {clients:>2} clients: {workers} workers / "
                          f"{first}: req/s {more[7]:.1f} / {one[7]:.1f} = "
                          f"x{more[7] / one[7]:.2f}")
    print("\nload average (1, 5, 15 min) at the end: "
          + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    print(f"reproduce: {sys.executable} benchmarks/http_sync.py "
          f"--requests {args.requests} --clients {' '.join(map(str, args.clients))} "
          f"--workers {' '.join(map(str, args.workers))} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
