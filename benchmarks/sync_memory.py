"""Benchmark: peak server memory of many large SODA sync cutouts at once.

Writes (once) an 8192 x 8192 float32 image with a TAN WCS under ``benchmarks/data/``
(256 MiB, git-ignored), serves it with ``vo-service serve`` in its own process on
127.0.0.1 with an empty cutout cache, and sends ``--clients`` concurrent ``GET /sync``
cutouts of ``--side`` x ``--side`` pixels (each at a different centre, so every one is a
cache miss). A client answered 503 waits for its ``Retry-After`` and asks again, so every
cutout is delivered in the end. The resident memory of the server process (with its
children) is sampled every 20 ms.

Prints the peak resident memory, the memory before the requests, the answers (200 / 503)
and the wall time. ``--budget BYTES`` sets ``[limits] sync_memory_bytes`` of the server
(``VO_SERVICE_LIMIT_SYNC_MEMORY_BYTES``); without it the server's default applies.

    .venv/bin/python benchmarks/sync_memory.py [--clients 16] [--side 4096] [--budget N]
    .venv/bin/python benchmarks/sync_memory.py --quick     # 8 clients, 1024 px stamps
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _server import start_server_process  # noqa: E402 - shared with the other HTTP benchmarks
from http_sync import free_port  # noqa: E402

DATA = HERE / "data" / "sync-memory"
IMAGE_SIDE = 8192
PIXEL_DEGREES = 0.1 / 3600  # 0.1 arcsec pixels
CENTRE = (150.0, 2.0)


def ensure_image() -> Path:
    """The 8192 x 8192 float32 image (written once, row block by row block)."""
    archive = DATA / "archive"
    path = archive / "big_8192.fits"
    if path.exists():
        return path
    from astropy.io import fits
    from astropy.wcs import WCS

    archive.mkdir(parents=True, exist_ok=True)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = CENTRE
    wcs.wcs.crpix = [IMAGE_SIDE / 2 + 0.5, IMAGE_SIDE / 2 + 0.5]
    wcs.wcs.cdelt = [-PIXEL_DEGREES, PIXEL_DEGREES]
    header = fits.PrimaryHDU(np.zeros((1, 1), dtype=np.float32)).header
    header["NAXIS1"] = header["NAXIS2"] = IMAGE_SIDE
    header.update(wcs.to_header())
    header["INSTRUME"] = "BENCH"
    header["FILTER"] = "VIS"
    partial = path.with_suffix(".part")
    with open(partial, "wb") as out:
        out.write(header.tostring().encode("ascii"))
        rng = np.random.default_rng(1)
        for _ in range(0, IMAGE_SIDE, 512):
            block = rng.normal(0, 1, (512, IMAGE_SIDE)).astype(">f4")
            out.write(block.tobytes())
        out.write(b"\0" * (-out.tell() % 2880))
    partial.rename(path)
    return path


def anonymous_bytes(pid: int) -> int:
    """Resident anonymous memory (``RssAnon``): what the process itself allocated, without
    the pages of memory-mapped files, which RSS counts once per mapping."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


class MemoryPeak(threading.Thread):
    """Samples the resident memory (RSS, and its anonymous part) of a process and its
    children until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.anonymous_peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
                self.anonymous_peak = max(self.anonymous_peak,
                                          sum(anonymous_bytes(p.pid) for p in tree))
            except (psutil.Error, OSError):
                return


def start_server(port: int, budget: int | None) -> subprocess.Popen:
    state = DATA / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    for key in [key for key in os.environ if key.startswith("VO_SERVICE_")]:
        del os.environ[key]  # the server inherits the environment: only our settings
    if budget is not None:
        os.environ["VO_SERVICE_LIMIT_SYNC_MEMORY_BYTES"] = str(budget)
    return start_server_process(
        [sys.executable, "-m", "vo_service.cli", "serve", "--data-root", str(DATA / "archive"),
         "--state-dir", str(state), "--host", "127.0.0.1", "--port", str(port)],
        port, state / "server.log")


def one_cutout(base: str, did: str, number: int, side: int, statuses: dict[int, int]) -> int:
    """Ask until the cutout comes (503: wait Retry-After); returns the bytes received."""
    # Centres 40 px apart: different cutouts (cache misses), all fully inside the image.
    dx, dy = (number % 4 - 1.5) * 40, (number // 4 - 1.5) * 40
    ra = CENTRE[0] + dx * PIXEL_DEGREES / np.cos(np.radians(CENTRE[1]))
    dec = CENTRE[1] + dy * PIXEL_DEGREES
    radius = (side / 2 - 1) * PIXEL_DEGREES
    with httpx.Client(base_url=base, timeout=600) as client:
        while True:
            with client.stream("GET", "/sync", params={
                    "ID": did, "CIRCLE": f"{ra:.8f} {dec:.8f} {radius:.8f}"}) as response:
                size = sum(len(chunk) for chunk in response.iter_bytes())
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code != 503:
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: "
                                           f"{response.read()[:300]!r}")
                    return size
                time.sleep(float(response.headers.get("retry-after", "5")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--side", type=int, default=4096, help="cutout side in pixels")
    parser.add_argument("--budget", type=int, help="sync_memory_bytes of the server")
    parser.add_argument("--quick", action="store_true", help="8 clients, 1024 px stamps")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.side = 8, 1024
    ensure_image()
    port = free_port()
    server = start_server(port, args.budget)
    base = f"http://127.0.0.1:{port}"
    try:
        search = httpx.get(f"{base}/query", params={"POS": f"CIRCLE {CENTRE[0]} {CENTRE[1]} 0.01",
                                                    "MAXREC": "1", "RESPONSEFORMAT": "votable"})
        from io import BytesIO

        from astropy.io.votable import parse_single_table

        did = str(parse_single_table(BytesIO(search.content)).array["obs_publisher_did"][0])
        idle = psutil.Process(server.pid).memory_info().rss
        sampler = MemoryPeak(server.pid)
        sampler.start()
        statuses: dict[int, int] = {}
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            sizes = list(pool.map(lambda n: one_cutout(base, did, n, args.side, statuses),
                                  range(args.clients)))
        wall = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(30)
    budget = "server default" if args.budget is None else f"{args.budget / 2**20:.0f} MiB"
    print(f"{args.clients} concurrent {args.side}x{args.side} float32 cutouts of an "
          f"{IMAGE_SIDE}x{IMAGE_SIDE} image (sync memory budget: {budget})")
    print(f"  stamps delivered : {len(sizes)} of {sizes[0] / 2**20:.1f} MiB each")
    print("  answers          : " + ", ".join(f"{count} x {status}"
                                               for status, count in sorted(statuses.items())))
    print(f"  server RSS idle  : {idle / 1e9:.2f} GB")
    print(f"  server RSS peak  : {sampler.peak / 1e9:.2f} GB (anonymous: "
          f"{sampler.anonymous_peak / 1e9:.2f} GB; the rest is pages of the memory-mapped "
          "image, counted once per open copy)")
    print(f"  wall time        : {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
