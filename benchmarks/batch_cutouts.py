"""Batch cutouts, side by side: vo-service's engine against astrocut, astropy Cutout2D and
raw memmap slicing, on one large float32 image and a tile-compressed copy.

    .venv/bin/python benchmarks/batch_cutouts.py            # 16k x 16k (1 GB), a few minutes
    .venv/bin/python benchmarks/batch_cutouts.py --quick    # 4k x 4k, well under a minute

Data are generated under benchmarks/data/ (git-ignored) and reused. Memory is private
memory (/proc/<pid>/smaps_rollup "Private_Dirty", summed over worker processes), sampled
every 10 ms: memory-mapped image pages are file-backed and not counted, so this shows what
the cutting itself holds; the table gives the peak increase over the start of each run.
Methods:
  engine-files    vo-service engine, one FITS file per stamp (atomic writes)
  engine-bundle   vo-service engine, all stamps streamed into one ZIP
  astrocut        astrocut.fits_cut called once per target (a subset, extrapolated)
  cutout2d-files  astropy Cutout2D on a memmapped HDU + HDU.writeto per stamp (subset)
  raw-files       raw-slices written as headerless files: what the file system allows
  raw-slices      numpy slices of the memmap (or .section of the compressed HDU), no WCS,
                  header or file: the physical limit
"""

from __future__ import annotations

import argparse
import os
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

from vo_service.engine.batch import iter_cutouts  # noqa: E402
from vo_service.engine.bundle import BundleWriter  # noqa: E402
from vo_service.engine.reading import OpenImage  # noqa: E402
from vo_service.engine.writing import atomic_write  # noqa: E402
from vo_service.shapes import CenterSize  # noqa: E402

warnings.simplefilter("ignore")
DATA = REPO / "benchmarks" / "data"


# ---- data ----------------------------------------------------------------------------

def image_header(side: int) -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    wcs.wcs.crval = [150.0, 2.2]
    wcs.wcs.crpix = [side / 2 + 0.5, side / 2 + 0.5]
    wcs.wcs.cd = np.array([[-0.1, 0.0], [0.0, 0.1]]) / 3600
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = side
    header["NAXIS2"] = side
    header.extend(wcs.to_header(), update=True)
    header["A_ORDER"] = header["B_ORDER"] = 2
    header["A_2_0"], header["B_0_2"] = 1e-8, -1e-8
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
    """Peak anonymous memory of this process plus its children while the block runs."""

    def __enter__(self) -> PeakMemory:
        me = os.getpid()
        self.baseline_kb = private_kb(me) + sum(private_kb(c) for c in children(me))
        self.peak_kb = self.baseline_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            total = private_kb(me) + sum(private_kb(child) for child in children(me))
            self.peak_kb = max(self.peak_kb, total)
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- methods -------------------------------------------------------------------------

_worker_image: OpenImage | None = None


def _open_in_worker(path: str, hdu: int) -> None:
    global _worker_image
    _worker_image = OpenImage(path, hdu)


def _regions(ras, decs, size: int) -> list[CenterSize]:
    return [CenterSize(float(ra), float(dec), size, size)
            for ra, dec in zip(ras, decs, strict=True)]


def _files_chunk(args) -> int:
    ras, decs, size, first, directory = args
    count = 0
    for result in iter_cutouts(_worker_image, _regions(ras, decs, size)):
        if result.has_stamp:
            atomic_write(Path(directory) / f"stamp_{first + result.index:06d}.fits",
                         result.chunks())
            count += 1
    return count


def _bundle_chunk(args) -> list[tuple[str, bytes]]:
    ras, decs, size, first = args
    return [(f"stamp_{first + r.index:06d}.fits", b"".join(r.chunks()))
            for r in iter_cutouts(_worker_image, _regions(ras, decs, size)) if r.has_stamp]


def _chunks(ras, decs, size: int, side: int, parts: int, extra=()):
    """Targets sorted by row (so a worker reads one band of a compressed image), split."""
    rows = WCS(image_header(side)).world_to_pixel_values(ras, decs)[1]
    order = np.argsort(rows)
    for piece in np.array_split(order, parts):
        yield (ras[piece], decs[piece], size, int(piece[0]) if len(piece) else 0, *extra)


def engine_files(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    if workers == 1:
        _open_in_worker(str(path), hdu)
        return _files_chunk((ras, decs, size, 0, out_dir))
    parts = max(workers * 4, len(ras) // 1000)
    with ProcessPoolExecutor(workers, initializer=_open_in_worker,
                             initargs=(str(path), hdu)) as pool:
        return sum(pool.map(_files_chunk, _chunks(ras, decs, size, side, parts, (out_dir,))))


def engine_bundle(path, hdu, ras, decs, size, side, workers, out_dir) -> int:
    target = Path(out_dir) / "bundle.zip"
    with BundleWriter(target) as bundle:
        if workers == 1:
            with OpenImage(path, hdu) as image:
                for result in iter_cutouts(image, _regions(ras, decs, size)):
                    if result.has_stamp:
                        bundle.add(f"stamp_{result.index:06d}.fits", result)
            return bundle.count
        parts = max(workers * 4, len(ras) // 250)
        with ProcessPoolExecutor(workers, initializer=_open_in_worker,
                                 initargs=(str(path), hdu)) as pool:
            for members in pool.map(_bundle_chunk, _chunks(ras, decs, size, side, parts)):
                for name, payload in members:
                    bundle.add_bytes(name, payload)
        return bundle.count


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


METHODS = {
    "raw-files": raw_files,
    "engine-files": engine_files,
    "engine-bundle": engine_bundle,
    "astrocut": astrocut_once_per_target,
    "cutout2d-files": cutout2d_files,
    "raw-slices": raw_slices,
}


def measure(method: str, path: Path, hdu: int, ras, decs, size: int, side: int,
            workers: int, budget_s: float, subset: int | None) -> tuple[float, float, int]:
    """(stamps per second, peak extra anonymous MB over the start, targets run)."""
    if subset is not None and subset < len(ras):
        ras, decs = ras[:subset], decs[:subset]
    out_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=DATA))
    try:
        with PeakMemory() as memory:
            start = time.perf_counter()
            done = METHODS[method](path, hdu, ras, decs, size, side, workers, out_dir)
            elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    assert done > 0
    return len(ras) / elapsed, (memory.peak_kb - memory.baseline_kb) / 1024, len(ras)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4k x 4k image, fewer targets")
    parser.add_argument("--workers", type=int, default=2, help="processes for the engine")
    parser.add_argument("--no-compressed", action="store_true")
    args = parser.parse_args()
    side = 4096 if args.quick else 16384
    counts = (1000,) if args.quick else (1000, 10000)
    sizes = (64, 256)
    slow_subset = 20 if args.quick else 100  # astrocut: ~27/s, Cutout2D+writeto: slower
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
    header = (f"{'image':6} {'targets':>7} {'size':>4} {'method':22} {'stamps/s':>10} "
              f"{'x astrocut':>10} {'x raw':>7} {'+priv MB':>8}  note")
    print(header)
    print("-" * len(header))
    for name, path, hdu in images:
        for count in counts:
            ras, decs = targets(side, count)
            for size in sizes:
                rows = []
                runs = [("raw-slices", 1, 200 if name == "rice" else None),
                        *([("raw-files", 1, None)] if name == "plain" else []),
                        ("astrocut", 1, slow_subset if name == "plain" else 5),
                        ("cutout2d-files", 1, slow_subset * 5 if name == "plain" else 5),
                        ("engine-files", 1, None), ("engine-files", args.workers, None),
                        ("engine-bundle", 1, None), ("engine-bundle", args.workers, None)]
                for method, workers, subset in runs:
                    rate, memory, ran = measure(method, path, hdu, ras, decs, size, side,
                                                workers, 0, subset)
                    label = method + (f" x{workers}" if workers > 1 else "")
                    note = f"{ran} of {count} targets, extrapolated" if ran < count else ""
                    rows.append((label, rate, memory, note))
                astro = next(rate for label, rate, _, _ in rows if label == "astrocut")
                raw = next(rate for label, rate, _, _ in rows if label == "raw-slices")
                for label, rate, memory, note in rows:
                    print(f"{name:6} {count:>7} {size:>4} {label:22} {rate:>10.0f} "
                          f"{rate / astro:>10.1f} {rate / raw:>7.2f} {memory:>8.0f}  {note}",
                          flush=True)
    print(f"# total {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
