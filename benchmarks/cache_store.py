"""Benchmark: storing and re-reading catalog-job stamps in the cutout cache, one file per
stamp (``put_many``) vs one pack file per batch (``put_pack``).

Puts ``--stamps`` stamps of ``--size`` bytes (20,000 x 17 kB: a 10,000-target x 4-band
job's FITS stamps are ~17 kB) in batches of ``--batch`` (256: one unit of a catalog job,
one image x up to 256 targets), each way into a fresh cache, then opens them all again
with ``open_many`` in batches of the same size, reading each stamp's bytes. Prints wall
and CPU seconds (user + system, this process; the system part apart) per phase and the
ratios own-files / packs; with ``--repeat N`` the median of N rounds, the two ways
alternating. Also measures the two checksums the entries are verified with (sha256 for own
files, CRC-32 for packed entries) on stamps of that size.

The cache lives under ``--dir`` (default: a temporary folder in ``benchmarks/data/``, on
the same file system as a state directory in the checkout); the page cache is warm for
the reads (the stamps were just written), as in a job that re-reads a fresh cache.

    .venv/bin/python benchmarks/cache_store.py [--stamps 20000] [--size 17408] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from vo_service.cache import CutoutCache, make_key


def make_stamps(count: int, size: int) -> list[tuple[str, bytes]]:
    """``count`` distinct (key, bytes) pairs of ``size`` bytes (random, so incompressible)."""
    body = os.urandom(size)
    return [(make_key({"stamp": i}), i.to_bytes(8, "little") + body[8:]) for i in range(count)]


def timed(function: Callable[[], object]) -> tuple[float, float, float]:
    """(wall, CPU, system) seconds of ``function()``; CPU is user + system of this process."""
    started, cpu = time.perf_counter(), os.times()
    function()
    after = os.times()
    system = after.system - cpu.system
    return (time.perf_counter() - started, (after.user - cpu.user) + system, system)


def batches(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def one_round(stamps: list[tuple[str, bytes]], batch: int, folder: Path,
              way: str) -> dict[str, tuple[float, float, float]]:
    """Put then open every stamp one way ('files' or 'packs') in a fresh cache."""
    directory = Path(tempfile.mkdtemp(prefix=f"{way}-", dir=folder))
    cache = CutoutCache(directory, max_bytes=10 * len(stamps) * len(stamps[0][1]))
    groups = batches(stamps, batch)
    put = cache.put_many if way == "files" else cache.put_pack

    def store() -> None:
        for group in groups:
            put(group)

    def read() -> None:
        for group in groups:
            opened = cache.open_many([key for key, _ in group])
            for (_key, content), cached in zip(group, opened.values(), strict=True):
                if cached is None or cached.content is None or len(cached.content) != len(content):
                    raise AssertionError("a stamp was not read back")
                cached.close()

    result = {"put": timed(store), "open": timed(read)}
    cache.close()
    shutil.rmtree(directory)
    return result


def checksum_rates(size: int, count: int = 2000) -> dict[str, float]:
    """GB/s of sha256 and CRC-32 over ``count`` buffers of ``size`` bytes (best of 5)."""
    buffers = [os.urandom(size) for _ in range(count)]
    rates = {}
    for name, function in (("sha256", lambda b: hashlib.sha256(b).hexdigest()),
                           ("crc32", zlib.crc32)):
        best = min(timed(lambda f=function: [f(b) for b in buffers])[0] for _ in range(5))
        rates[name] = size * count / best / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stamps", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=17 * 1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path,
                        default=Path(__file__).resolve().parent / "data" / "cache_store")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    rates = checksum_rates(args.size)
    print(f"checksums on {args.size} B buffers: sha256 {rates['sha256']:.2f} GB/s, "
          f"crc32 {rates['crc32']:.2f} GB/s (crc32/sha256 x{rates['crc32'] / rates['sha256']:.2f})")

    stamps = make_stamps(args.stamps, args.size)
    rounds: dict[str, list[dict[str, tuple[float, float, float]]]] = {"files": [], "packs": []}
    for number in range(args.repeat):
        for way in ("files", "packs") if number % 2 == 0 else ("packs", "files"):
            rounds[way].append(one_round(stamps, args.batch, args.dir, way))
    median = {way: {phase: tuple(statistics.median(r[phase][i] for r in results)
                                 for i in range(3))
                    for phase in ("put", "open")}
              for way, results in rounds.items()}

    print(f"{args.stamps} stamps of {args.size} B, batches of {args.batch}, "
          f"median of {args.repeat} rounds")
    print(f"{'':22} {'wall s':>8} {'CPU s':>8} {'of it sys':>10} {'stamps/s':>10} "
          f"{'CPU us/stamp':>13}")
    for way, label in (("files", "put_many"), ("packs", "put_pack")):
        for phase in ("put", "open"):
            wall, cpu, system = median[way][phase]
            name = f"{label if phase == 'put' else 'open_many'} ({way})"
            print(f"{name:22} {wall:8.2f} {cpu:8.2f} {system:10.2f} {args.stamps / wall:10.0f} "
                  f"{cpu / args.stamps * 1e6:13.1f}")
    for phase in ("put", "open"):
        (fw, fc, _), (pw, pc, _) = median["files"][phase], median["packs"][phase]
        print(f"{phase}: files / packs  wall x{fw / pw:.2f}  CPU x{fc / pc:.2f}")


if __name__ == "__main__":
    main()
