"""Batch cutouts, side by side: vo-service's engine against astrocut, astropy Cutout2D and
raw memmap slicing, on one large float32 image and a tile-compressed copy.

    .venv/bin/python benchmarks/batch_cutouts.py            # 16k x 16k (1 GB), a few minutes
    .venv/bin/python benchmarks/batch_cutouts.py --quick    # 4k x 4k, well under a minute
    .venv/bin/python benchmarks/batch_cutouts.py --methods engine-bundle \
        --no-compressed --targets 10000 --sizes 64 --repeat 3   # 1 -> 2 worker scaling

Data are generated under benchmarks/data/ (git-ignored) and reused. Memory is private
memory (/proc/<pid>/smaps_rollup "Private_Dirty", summed over worker processes), sampled
every 100 ms: memory-mapped image pages are file-backed and not counted, so this shows what
the cutting itself holds; the table gives the peak increase over the start of each run.
Reading smaps_rollup walks the page tables of every mapping (the 1 GB image too): about
4 ms of kernel time per process, so the sampler is kept sparse and its own CPU time is
left out of "/cpu-s" (at one sample per 10 ms per process it took about a core of the two,
and more with more worker processes, which made "x2" look no faster than one).
"/cpu-s" is stamps per CPU second (user + system of this process and its worker
processes, from getrusage): on a shared machine it moves much less than stamps/s with
other load, and a pool that spends the CPU per stamp of one worker scales on a quiet one.
After each image/targets/size group, "x2/x1" lines give the N-worker over 1-worker ratio
of both (stamps/s, /cpu-s) for engine-files and engine-bundle; with --repeat, every engine
figure is the best of that many runs.
Methods:
  engine-files    vo-service engine (batch.write_task_files), one FITS file per stamp
  engine-bundle   vo-service engine (batch.bundle_tasks), all stamps streamed into one ZIP;
                  "xN": N worker processes, each cutting a band of rows of the same image
  astrocut        astrocut.fits_cut called once per target (a subset, extrapolated)
  cutout2d-files  astropy Cutout2D on a memmapped HDU + HDU.writeto per stamp (subset)
  raw-files       raw-slices written as headerless files: what the file system allows
  raw-slices      numpy slices of the memmap (or .section of the compressed HDU), no WCS,
                  header or file: the physical limit
  tile-decode     (compressed image) the codec alone decoding, once, the leading pixels of
                  every tile the stamps touch that the engine decodes (no dequantization,
                  no stamps): the floor of any cutter that decodes with this codec
At the end, "ratios" lines give the compressed image's engine-bundle rate over the plain
image's (issue 13 aims at >= 0.5 from 1,000 targets) and over the tile-decode floor.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _images import sip_image_header  # noqa: E402 - shared with time_series.py

from vo_service.engine import tiles  # noqa: E402
from vo_service.engine.batch import (  # noqa: E402
    ImageTask,
    bundle_tasks,
    run_tasks,
    write_task_files,
)
from vo_service.engine.geometry import PixelBox  # noqa: E402
from vo_service.engine.reading import OpenImage  # noqa: E402
from vo_service.shapes import CenterSize  # noqa: E402

warnings.simplefilter("ignore")
DATA = REPO / "benchmarks" / "data"


# ---- data ----------------------------------------------------------------------------

def image_header(side: int) -> fits.Header:
    header = sip_image_header(side, (150.0, 2.2), (side / 2 + 0.5, side / 2 + 0.5), 0.1)
    header["BUNIT"] = "uJy"
    return header


def make_plain(path: Path, side: int) -> Path:
    """A float32 image written row-block by row-block through np.memmap (fast, low memory)."""
    if path.exists():
        return path
    header = image_header(side)
    text = header.tostring().encode("ascii")
    data_bytes = side * side * 4
    temp = path.with_suffix(".tmp")
    with open(temp, "wb") as stream:
        stream.write(text)
        stream.truncate(len(text) + data_bytes + (-data_bytes % 2880))
    pixels = np.memmap(temp, dtype=">f4", mode="r+", offset=len(text), shape=(side, side))
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, (256, side)).astype(np.float32)
    for top in range(0, side, 256):
        rows = np.arange(top, min(side, top + 256), dtype=np.float32)[:, None]
        pixels[top:top + 256] = 100 + 0.001 * rows + noise[: len(rows)]
    pixels.flush()
    del pixels
    os.replace(temp, path)
    return path


def make_compressed(plain: Path, path: Path) -> Path:
    """RICE_1 copy with row tiles (astropy's default tiling), lossy float quantization."""
    if path.exists():
        return path
    with fits.open(plain, memmap=True) as hdus:
        compressed = fits.CompImageHDU(hdus[0].data, hdus[0].header, compression_type="RICE_1")
        fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return path


def targets(side: int, count: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """ICRS positions uniformly over the image (some stamps at the edges are partial)."""
    rng = np.random.default_rng(seed)
    wcs = WCS(image_header(side))
    sky = wcs.pixel_to_world(rng.uniform(0, side, count), rng.uniform(0, side, count))
    return sky.ra.deg, sky.dec.deg


# ---- memory --------------------------------------------------------------------------

def private_kb(pid: int | str = "self") -> int:
    """Private_Dirty of a process: its own written (anonymous) memory. Unlike "Anonymous",
    it leaves out pages a forked worker still shares copy-on-write with its parent, and
    like it, it leaves out the memory-mapped image (file-backed, clean)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as stream:
            for line in stream:
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class PeakMemory:
    """Peak anonymous memory of this process plus its children while the block runs;
    `cpu_s` is the CPU time the sampling itself took (to leave out of the run's)."""

    INTERVAL_S = 0.1

    def __enter__(self) -> PeakMemory:
        me = os.getpid()
        self.baseline_kb = private_kb(me) + sum(private_kb(c) for c in children(me))
        self.peak_kb = self.baseline_kb
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = os.getpid()
        started = time.thread_time()
        while not self._stop.wait(self.INTERVAL_S):
            total = private_kb(me) + sum(private_kb(child) for child in children(me))
            self.peak_kb = max(self.peak_kb, total)
        self.cpu_s = time.thread_time() - started

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- methods -------------------------------------------------------------------------

def _tasks(path: Path, hdu: int, ras, decs, size: int, side: int, parts: int) -> list:
    """Targets sorted by row (a worker then reads one band of a compressed image) and split
    into `parts` tasks; stamps are named by their target's index."""
    rows = WCS(image_header(side)).world_to_pixel_values(ras, decs)[1]
    order = np.argsort(rows, kind="stable")
    tasks = []
    for piece in np.array_split(order, parts):
        regions = tuple(CenterSize(float(ras[i]), float(decs[i]), size, size) for i in piece)
        names = tuple(f"stamp_{i:06d}.fits" for i in piece)
        tasks.append(ImageTask(path, hdu, regions, names=names))
    return tasks


def _parts(count: int, workers: int) -> int:
    return 1 if workers == 1 else max(workers * 2, count // 2500)


def engine_files(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    tasks = _tasks(path, hdu, ras, decs, size, side, _parts(len(ras), workers))
    done = run_tasks(tasks, write_task_files, workers=workers, processes=True,
                     args=(out_dir,))
    return sum(1 for _, records in done for record in records if record.path)


def engine_bundle(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    tasks = _tasks(path, hdu, ras, decs, size, side, _parts(len(ras), workers))
    done = bundle_tasks(tasks, Path(out_dir) / "bundle.zip", workers=workers)
    return sum(1 for records in done.values() for record in records if record.path)


def astrocut_once_per_target(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    from astrocut import fits_cut

    for ra, dec in zip(ras, decs, strict=True):
        fits_cut(str(path), f"{ra} {dec}", size, single_outfile=True, output_dir=str(out_dir),
                 verbose=False)
    return len(ras)


def cutout2d_files(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D

    with fits.open(path, memmap=True) as hdus:
        source = hdus[hdu]
        wcs = WCS(source.header)
        data = source.section if isinstance(source, fits.CompImageHDU) else source.data
        for index, (ra, dec) in enumerate(zip(ras, decs, strict=True)):
            stamp = Cutout2D(data, SkyCoord(ra, dec, unit="deg"), size, wcs=wcs, mode="trim")
            fits.PrimaryHDU(stamp.data, header=stamp.wcs.to_header(relax=True)).writeto(
                Path(out_dir) / f"stamp_{index:06d}.fits")
    return len(ras)


def raw_slices(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    x, y = WCS(image_header(side)).world_to_pixel_values(ras, decs)
    x0 = np.clip(np.ceil(x - size / 2).astype(int), 0, side)
    y0 = np.clip(np.ceil(y - size / 2).astype(int), 0, side)
    with fits.open(path, memmap=True) as hdus:
        source = hdus[hdu]
        data = source.section if isinstance(source, fits.CompImageHDU) else source.data
        total = 0
        for left, bottom in zip(x0, y0, strict=True):
            total += np.array(data[bottom:bottom + size, left:left + size]).size
    return len(ras)


def raw_files(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    x, y = WCS(image_header(side)).world_to_pixel_values(ras, decs)
    x0 = np.clip(np.ceil(x - size / 2).astype(int), 0, side)
    y0 = np.clip(np.ceil(y - size / 2).astype(int), 0, side)
    with fits.open(path, memmap=True) as hdus:
        data = hdus[hdu].data
        for index, (left, bottom) in enumerate(zip(x0, y0, strict=True)):
            with open(Path(out_dir) / f"stamp_{index:06d}.raw", "wb") as stream:
                stream.write(np.array(data[bottom:bottom + size, left:left + size]).data)
    return len(ras)


def tile_decode(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    x, y = WCS(image_header(side)).world_to_pixel_values(ras, decs)
    x0 = np.clip(np.ceil(x - size / 2).astype(int), 0, side - 1)
    y0 = np.clip(np.ceil(y - size / 2).astype(int), 0, side - 1)
    boxes = [PixelBox(((int(left), min(side, int(left) + size)),
                       (int(bottom), min(side, int(bottom) + size))))
             for left, bottom in zip(x0, y0, strict=True)]
    with OpenImage(path, hdu) as image:
        heap = image.tile_heap
        tile_x, tile_y = image.tile_shape
        grid = (-(-side // tile_y), -(-side // tile_x))
        reach = tiles.tile_reach(boxes, (tile_x, tile_y), grid, (side, side))
        for row, column in zip(*np.nonzero(reach), strict=True):
            heap.integers(int(row), int(column), int(reach[row, column]))
    return len(ras)


METHODS = {
    "raw-files": raw_files,
    "engine-files": engine_files,
    "engine-bundle": engine_bundle,
    "astrocut": astrocut_once_per_target,
    "cutout2d-files": cutout2d_files,
    "raw-slices": raw_slices,
    "tile-decode": tile_decode,
}


def measure(method: str, path: Path, hdu: int, ras, decs, size: int, side: int,
            workers: int, budget_s: float, subset: int | None
            ) -> tuple[float, float, float, int]:
    """(stamps per wall second, stamps per CPU second, peak extra private MB, targets run).
    Stamps per CPU second do not depend on other load on the machine."""
    if subset is not None and subset < len(ras):
        ras, decs = ras[:subset], decs[:subset]
    out_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=DATA))
    try:
        with PeakMemory() as memory:
            cpu_start = _cpu_seconds()
            start = time.perf_counter()
            done = METHODS[method](path, hdu, ras, decs, size, side, workers, out_dir)
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu_start
        cpu -= memory.cpu_s
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    assert done > 0
    return (len(ras) / elapsed, len(ras) / max(cpu, 1e-9),
            (memory.peak_kb - memory.baseline_kb) / 1024, len(ras))


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished (waited-for) children."""
    own, children = (resource.getrusage(who)
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _scaling(rows: list[tuple], workers: int, group: str) -> str:
    """The N-worker / 1-worker ratios of stamps/s and /cpu-s of the engine's methods."""
    found = {row[0]: row for row in rows}
    parts = []
    for method in ("engine-files", "engine-bundle"):
        if method not in found:
            continue
        one, many = found[method], found[f"{method} x{workers}"]
        parts.append(f"{method} stamps/s {many[1] / one[1]:.2f}, /cpu-s {many[2] / one[2]:.2f}")
    return f"# x{workers}/x1 {group}: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4k x 4k image, fewer targets")
    parser.add_argument("--workers", type=int, default=2, help="processes for the engine")
    parser.add_argument("--no-compressed", action="store_true")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS),
                        help="methods to run (default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per engine figure, the best one kept (noisy machines)")
    parser.add_argument("--targets", type=int, nargs="+", help="target counts to run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256],
                        help="stamp sizes in pixels")
    args = parser.parse_args()
    side = 4096 if args.quick else 16384
    counts = args.targets or ((1000,) if args.quick else (1000, 10000))
    sizes = args.sizes
    slow_subset = 20 if args.quick else 50  # astrocut: ~27/s, Cutout2D+writeto: slower
    DATA.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plain = make_plain(DATA / f"image_{side}.fits", side)
    images = [("plain", plain, 0)]
    if not args.no_compressed:
        rice = DATA / f"image_{side}_rice.fits"
        with ProcessPoolExecutor(1) as pool:  # keep the compression's memory out of this one
            pool.submit(make_compressed, plain, rice).result()
        images.append(("rice", rice, 1))
    print(f"# data ready in {time.perf_counter() - started:.1f} s: "
          + ", ".join(f"{name} {p.stat().st_size / 1e6:.0f} MB" for name, p, _ in images))
    with open(plain, "rb") as stream:  # warm the page cache so every method reads alike
        while stream.read(64 << 20):
            pass
    print(f"# load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = (f"{'image':6} {'targets':>7} {'size':>4} {'method':18} {'stamps/s':>9} "
              f"{'/cpu-s':>9} "
              f"{'x astrocut':>10} {'x raw':>7} {'+priv MB':>8}  note")
    print(header)
    print("-" * len(header))
    table: dict[tuple, dict[str, tuple[float, float]]] = {}
    for name, path, hdu in images:
        for count in counts:
            ras, decs = targets(side, count)
            for size in sizes:
                rows = []
                others = [("raw-slices", 1, 30 if name == "rice" else None),
                          *([("tile-decode", 1, None)] if name == "rice" else []),
                          *([("raw-files", 1, None)] if name == "plain" else []),
                          ("astrocut", 1, slow_subset if name == "plain" else 3),
                          ("cutout2d-files", 1, slow_subset * 2 if name == "plain" else 3)]
                runs = [*others,
                        ("engine-files", 1, None), ("engine-files", args.workers, None),
                        ("engine-bundle", 1, None), ("engine-bundle", args.workers, None)]
                for method, workers, subset in runs:
                    if method not in args.methods:
                        continue
                    repeat = max(1, args.repeat) if method.startswith("engine") else 1
                    measured = [measure(method, path, hdu, ras, decs, size, side, workers, 0,
                                        subset) for _ in range(repeat)]
                    rate, per_cpu = (max(run[i] for run in measured) for i in (0, 1))
                    memory, ran = max(run[2] for run in measured), measured[0][3]
                    label = method + (f" x{workers}" if workers > 1 else "")
                    note = f"{ran} of {count} targets, extrapolated" if ran < count else ""
                    rows.append((label, rate, per_cpu, memory, note))
                table[name, count, size] = {label: (rate, per_cpu) for label, rate, per_cpu,
                                            *_ in rows}
                rates = {row[0]: row[1] for row in rows}
                astro, raw = rates.get("astrocut"), rates.get("raw-slices")
                for label, rate, per_cpu, memory, note in rows:
                    versus = (f"{rate / astro:>10.1f} {rate / raw:>7.2f}" if astro and raw
                              else f"{'-':>10} {'-':>7}")
                    print(f"{name:6} {count:>7} {size:>4} {label:18} {rate:>9.0f} "
                          f"{per_cpu:>9.0f} {versus} {memory:>8.0f}  {note}", flush=True)
                if args.workers > 1:
                    print(_scaling(rows, args.workers, f"{name} {count} {size}"), flush=True)
    print_ratios(table, counts, sizes, args.workers)
    print(f"# total {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores")


def print_ratios(table: dict, counts, sizes, workers: int) -> None:
    """Compressed over plain engine-bundle rates (wall and per CPU second), and the
    compressed engine-bundle x1 over the tile-decode floor, per targets and size."""
    if not any(key[0] == "rice" for key in table):
        return
    print("# ratios: rice/plain engine-bundle (wall, per cpu-s); rice engine-bundle x1 / "
          "tile-decode floor (per cpu-s)")
    for count in counts:
        for size in sizes:
            rice, plain = table["rice", count, size], table["plain", count, size]
            parts = []
            for label in ("engine-bundle", f"engine-bundle x{workers}"):
                if label in rice and label in plain:
                    parts.append(f"{label} {rice[label][0] / plain[label][0]:.2f} "
                                 f"({rice[label][1] / plain[label][1]:.2f})")
            floor = (f"; engine/floor {rice['engine-bundle'][1] / rice['tile-decode'][1]:.2f}"
                     if "engine-bundle" in rice and "tile-decode" in rice else "")
            print(f"# ratios {count:>6} x {size:>3} px: " + ", ".join(parts) + floor)


if __name__ == "__main__":
    main()
