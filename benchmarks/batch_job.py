"""Benchmark: a catalog batch job of 10,000 targets x 4 bands on the demo archive.

Measures the UWS batch job end to end (catalog parsing, one index lookup, per-image
cutting through the cache, manifest, ZIP bundle): wall time, stamps/s and peak RSS, cold
(empty cache, no outcome remembered) and again warm (same catalog, every stamp from the
cache). In the same run it measures the engine the job calls,
``engine.batch.bundle_tasks`` on the same stamps (the same images and targets, 256 targets
per task, ``--workers`` processes, one ZIP: what ``benchmarks/batch_cutouts.py`` calls
"engine-bundle"), and prints the job's rates as ratios of it: cold / engine (aim >= 0.5)
and warm / engine (aim >= 0.9).

The job's own bookkeeping is timed by wrapping, in the job's process only, the calls that
do it (see ``BOOKKEEPING``): the manifest (taking the rows and their texts, which the
worker processes make and render with the stamps, and writing the VOTable now and then),
the results (the stamps file and job-store rows), progress (job-store updates) and the
cache index (the cutout cache's SQLite index and the remembered stamp outcomes, when the
job's own process cuts). Its share is the seconds spent inside those calls, summed over
all threads of the job, over the job's wall time: an upper bound, since calls on different
threads may overlap, and waits for the GIL count (aim < 15 %); beside it, the CPU seconds
of those calls (``time.thread_time``) over the CPU seconds of the job's process, which a
busy machine disturbs less.

On a shared machine wall times vary with the load; the CPU seconds per stamp (user +
system, the engine's worker processes included) are printed too, as a steadier check of
the same ratios. The archive's spatial index is built before the job is timed, as a
running server has it (once per index generation). For scale, the same stamps cut one by
one with astropy's Cutout2D (open + cut + write per stamp, on a sample) as a peer baseline.

    .venv/bin/python benchmarks/batch_job.py [--targets 10000] [--workers 2] [--keep DIR]
        [--executor local|processes|local,processes,local,processes] [--repeat 3]

``--repeat N`` runs cold, warm and engine N times in turn and reports the best (shortest)
run of each, as ``batch_cutouts.py --repeat`` does: on a shared machine a run slowed by
other load says little about either side.

``--executor`` says where the job's units run (the ``executor`` setting, by default the
service's): ``local`` threads of the job's process, or ``processes``, ``--workers`` worker
processes of the machine (``worker_processes``; the pool is started before the clock
starts, as a running server keeps it between jobs; its start is printed, and the workers'
CPU seconds count as the job's). A comma-separated list runs cold + warm jobs for each in
turn on the same state (the cache emptied before each cold job) and prints every run's
ratios to the engine run right after it.

With ``--matrix`` it measures the whole product matrix instead (docs/products.md): three
cold jobs on the same catalog, BGSUB + RMS + FLAG (the image stamps alone), then + the
CATALOG-PSF product, then + photometry on the stamps (two apertures), and prints stamps/s
and what the PSF and the photometry cost relative to the image stamps.

Each job runs in its own process so that peak RSS belongs to that job alone.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BANDS = ["VIS", "NIR-Y", "NIR-J", "NIR-H"]
SIZE_PIX = 64


def make_catalog(archive: Path, n_targets: int, seed: int = 1) -> bytes:
    """``n_targets`` positions: demo sources with a few arcsec of jitter, as CSV."""
    with open(archive / "sources.csv", newline="") as handle:
        sources = [row for row in csv.DictReader(handle) if row["field"] == "EDF-FORNAX"]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sources), n_targets)
    jitter = rng.normal(0, 3 / 3600, (n_targets, 2))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "ra", "dec"])
    for number, (pick, (dra, ddec)) in enumerate(zip(picks, jitter, strict=True)):
        source = sources[pick]
        writer.writerow([f"t{number}", f"{float(source['ra']) + dra:.7f}",
                         f"{float(source['dec']) + ddec:.7f}"])
    return out.getvalue().encode()


# The job's bookkeeping: part -> (module, attribute path) of the calls timed.
BOOKKEEPING = {
    "manifest": [("vo_service.jobs.batch", "manifest_row"),  # rows of units that failed
                 ("vo_service.jobs.running_manifest", "RunningManifest.render"),
                 ("vo_service.jobs.running_manifest", "write_rendered"),
                 ("vo_service.jobs.running_manifest", "write_manifest")],
    "results": [("vo_service.jobs.stamp_directory", "StampDirectory.append"),
                ("vo_service.jobs.store", "JobStore.add_results"),
                ("vo_service.jobs.store", "JobStore.put_result")],
    "progress": [("vo_service.jobs.store", "JobStore.update")],
    "cache index": [("vo_service.cache.index", "CacheIndex.rows"),
                    ("vo_service.cache.index", "CacheIndex.touch_many"),
                    ("vo_service.cache.index", "CacheIndex.record_many"),
                    ("vo_service.cache.index", "CacheIndex.record_packed"),
                    ("vo_service.cache.index", "CacheIndex.evict_over"),
                    ("vo_service.jobs.store", "JobStore.stamp_outcomes"),
                    ("vo_service.jobs.store", "JobStore.save_stamp_outcomes")],
}


class Timers:
    """Seconds (wall, and CPU of the calling thread) spent inside wrapped functions, per
    part, summed over threads (nested calls of the same part count once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._depth = threading.local()
        self._lock = threading.Lock()

    def install(self, parts: dict[str, list[tuple[str, str]]]) -> None:
        """Wrap every function of ``parts`` (fails loudly if one is gone)."""
        import importlib

        for part, places in parts.items():
            self.seconds[part] = self.cpu_seconds[part] = 0.0
            for module_name, attribute in places:
                owner = importlib.import_module(module_name)
                *path, name = attribute.split(".")
                for step in path:
                    owner = getattr(owner, step)
                setattr(owner, name, self._timed(part, getattr(owner, name)))

    def _timed(self, part: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            depth = getattr(self._depth, part, 0)
            setattr(self._depth, part, depth + 1)
            started, cpu_started = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                setattr(self._depth, part, depth)
                if depth == 0:
                    with self._lock:
                        self.seconds[part] += time.perf_counter() - started
                        self.cpu_seconds[part] += time.thread_time() - cpu_started
        return timed


MATRIX = {  # --matrix: label -> (product types, photometry parameters)
    "images": (("BGSUB", "RMS", "FLAG"), ()),
    "+psf": (("BGSUB", "RMS", "FLAG", "CATALOG-PSF"), ()),
    "+photometry": (("BGSUB", "RMS", "FLAG", "CATALOG-PSF"),
                    (("PHOTOMETRY", "true"), ("APERTURE", "1 2"))),
}


def run_job(state: Path, archive: Path, catalog: Path, workers: int,
            variant: str | None = None, executor: str = "local", keep_job: bool = False
            ) -> dict:
    """Run one batch job in this process (its units on ``executor``); return its
    figures. ``keep_job``: leave the job in place (its new stamps stay cached only as
    long as it exists, as for a user who runs the same catalog again)."""
    from vo_service.archive.index import ArchiveIndex
    from vo_service.config import Settings
    from vo_service.jobs.documents import job_document
    from vo_service.jobs.store import Parameter
    from vo_service.products.manifest import read_manifest
    from vo_service.protocols.uws import create_job_service

    settings = Settings(data_roots=(archive,), state_dir=state, executor=executor,
                        worker_processes=workers)
    index = ArchiveIndex(settings.index_path)
    timers = Timers()
    timers.install(BOOKKEEPING)
    products, extra = MATRIX[variant] if variant else (("BGSUB",), ())
    parameters = [Parameter("UPLOAD", "cat,param:cat"), Parameter("SIZE", str(SIZE_PIX)),
                  Parameter("WORKERS", str(workers))]
    parameters += [Parameter("PRODUCTTYPE", product) for product in products]
    parameters += [Parameter(name, value) for name, value in extra]
    parameters += [Parameter("BANDNAME", band) for band in BANDS]

    async def main() -> dict:
        service = create_job_service(settings, index)
        await service.start()
        index.spatial_index()  # built once per index generation in a running server
        pool_start = start_worker_processes(service.resources.executors, workers) \
            if executor == "processes" else 0.0  # a running server keeps its pool
        cpu_started = cpu_seconds() + descendants_cpu_seconds()
        started = time.perf_counter()
        job = service.create(parameters, {"CAT": ("targets.csv", catalog.read_bytes())},
                             base_url="http://localhost/async")
        service.run(job.job_id)
        while job.phase.value in ("PENDING", "QUEUED", "EXECUTING"):
            job = await service.wait(job.job_id, 30, None)
        wall = time.perf_counter() - started
        cpu = cpu_seconds() + descendants_cpu_seconds() - cpu_started  # workers still run
        results = service.store.results(job.job_id)
        document = job_document(job, service.store.parameters(job.job_id), results,
                                f"http://localhost/async/{job.job_id}")
        rows = read_manifest(service.store.job_dir(job.job_id) / "manifest.xml")
        stamps = sum(row.content_type == "application/fits" for row in rows)
        bundle = next(r.size for r in results if r.result_id == "bundle")
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the job's
        drawing = time.perf_counter()  # the MOC: drawn on its first request, after the job
        coverage = service.result_file(job.job_id, "coverage")
        coverage_s = time.perf_counter() - drawing if coverage is not None else None
        if not keep_job:  # a kept state directory (--keep) must not fill the disk
            service.delete(job.job_id)
        await service.stop()
        return {"phase": job.phase.value, "wall_s": wall, "stamps": stamps,
                "bundle_mb": bundle / 1e6, "error": job.error_message,
                "document_kb": len(document) / 1e3, "cpu_s": cpu,
                "pool_start_s": pool_start, "coverage_s": coverage_s, "peak_rss_mb": peak_rss,
                "bookkeeping_s": dict(timers.seconds),
                "bookkeeping_cpu_s": dict(timers.cpu_seconds)}

    return asyncio.run(main())


def start_worker_processes(executors, workers: int) -> float:
    """Start the job's worker processes (one trivial call each); seconds it took."""
    started = time.perf_counter()
    pool = executors.processes()
    futures = [pool.submit(time.sleep, 0.2) for _ in range(workers)]  # one on each
    for future in futures:
        future.result()
    return time.perf_counter() - started


def descendants_cpu_seconds() -> float:
    """User + system CPU seconds of the running processes below this one (the forkserver
    and its worker processes: not this process's children, so not in RUSAGE_CHILDREN)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    below, total, frontier = set(), 0, {os.getpid()}
    while frontier:
        frontier = {pid for pid, (parent, _) in stats.items()
                    if parent in frontier and pid not in below}
        below |= frontier
        total += sum(stats[pid][1] for pid in frontier)
    return total / ticks


def engine_bundle(state: Path, archive: Path, catalog: Path, workers: int) -> dict:
    """The engine alone on the job's stamps: ``bundle_tasks`` into one ZIP."""
    from vo_service.archive.index import ArchiveIndex
    from vo_service.engine.batch import ImageTask, bundle_tasks
    from vo_service.shapes import CenterSize

    index = ArchiveIndex(state / "index.sqlite")
    rows = list(csv.DictReader(io.StringIO(catalog.read_text())))
    ra = np.array([float(r["ra"]) for r in rows])
    dec = np.array([float(r["dec"]) for r in rows])
    per_image: dict[str, tuple[object, list[int]]] = {}
    for position, record in index.lookup(ra, dec, band=BANDS, product_type="BGSUB"):
        per_image.setdefault(record.obs_publisher_did, (record, []))[1].append(position)
    tasks = []
    for record, positions in per_image.values():
        for start in range(0, len(positions), 256):  # the job's units (CHUNK_TARGETS)
            chosen = positions[start:start + 256]
            tasks.append(ImageTask(
                record.path, record.hdu,
                tuple(CenterSize(ra[i], dec[i], SIZE_PIX, SIZE_PIX, "pix") for i in chosen),
                origfile=record.path.name,
                names=tuple(f"{record.band}/{rows[i]['id']}_{record.obs_id}.fits"
                            for i in chosen)))
    with tempfile.TemporaryDirectory(dir=state) as folder:
        cpu_started = cpu_seconds(children=True)
        started = time.perf_counter()
        done = bundle_tasks(tasks, Path(folder) / "bundle.zip", workers=workers)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(children=True) - cpu_started  # the pool's processes have ended
    stamps = sum(1 for records in done.values() for record in records if record.path)
    return {"stamps": stamps, "wall_s": wall, "cpu_s": cpu}


def cpu_seconds(children: bool = False) -> float:
    """User + system CPU seconds of this process (and of its ended children)."""
    who = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if children else [])
    return sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime for w in who)


def cutout2d_baseline(state: Path, archive: Path, catalog: Path, sample: int) -> float:
    """Stamps/s of astropy Cutout2D, one open + cut + FITS write per stamp (a sample)."""
    import warnings

    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    from vo_service.archive.index import ArchiveIndex

    index = ArchiveIndex(state / "index.sqlite")
    rows = list(csv.DictReader(io.StringIO(catalog.read_text())))[:sample]
    ra = np.array([float(r["ra"]) for r in rows])
    dec = np.array([float(r["dec"]) for r in rows])
    pairs = index.lookup(ra, dec, band=BANDS, product_type="BGSUB")
    from astropy.coordinates import SkyCoord

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for position, record in pairs:
            with fits.open(record.path, memmap=True) as hdulist:
                hdu = hdulist[record.hdu]
                wcs = WCS(hdu.header)
                stamp = Cutout2D(hdu.data, SkyCoord(ra[position], dec[position], unit="deg"),
                                 SIZE_PIX, wcs=wcs, mode="trim")
                header = hdu.header.copy()
                header.update(stamp.wcs.to_header(relax=True))
                buffer = io.BytesIO()
                fits.PrimaryHDU(stamp.data, header).writeto(buffer)
    return len(pairs) / (time.perf_counter() - started)


def main() -> int:
    from vo_service.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="reuse/keep the archive and state here")
    parser.add_argument("--baseline-sample", type=int, default=100,
                        help="targets cut with Cutout2D for the peer baseline")
    parser.add_argument("--executor", default=Settings().executor,
                        help="where the job's units run: local (threads), processes, or a "
                             "comma-separated list of them run in turn on the same state")
    parser.add_argument("--repeat", type=int, default=1,
                        help="cold, warm and engine runs of each executor, in turn; the "
                             "best of each is reported (noisy machines)")
    parser.add_argument("--matrix", action="store_true",
                        help="images alone, + CATALOG-PSF, + photometry (three cold jobs)")
    parser.add_argument("--variant", choices=sorted(MATRIX), help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=3, metavar=("STATE", "ARCHIVE", "CATALOG"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--engine", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep-job", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        state, archive, catalog = map(Path, args.child)
        if args.engine:
            print(json.dumps(engine_bundle(state, archive, catalog, args.workers)))
        else:
            print(json.dumps(run_job(state, archive, catalog, args.workers, args.variant,
                                     args.executor, args.keep_job)))
        return 0

    root = args.keep or Path(tempfile.mkdtemp(prefix="vo-bench-batch-"))
    archive, state = root / "archive", root / "state"
    from vo_service.archive.demo import build_demo_archive
    from vo_service.archive.index import run_index
    from vo_service.config import Settings

    if not (archive / "sources.csv").exists():
        build_demo_archive(archive)
    run_index(Settings(data_roots=(archive,), state_dir=state))
    catalog = root / "targets.csv"
    catalog.write_bytes(make_catalog(archive, args.targets))

    if args.matrix:
        empty_cache(state)  # a cold start
        return run_matrix(state, archive, catalog, args)
    measured = []
    for executor in args.executor.split(","):
        tries: dict[str, list[dict]] = {"cold": [], "warm": [], "engine": []}
        for _ in range(args.repeat):
            empty_cache(state)  # a cold start
            for label in tries:  # the engine after the jobs: images in memory
                # the cold job is kept for the warm one: its new stamps are cached in its bundle
                tries[label].append(run_child(
                    args, state, archive, catalog, "--executor", executor,
                    *(["--engine"] * (label == "engine")),
                    *(["--keep-job"] * (label == "cold"))))
            empty_cache(state)  # the cold job goes too
        if args.repeat > 1:
            print(f"{executor}: wall seconds of each run, the best kept: " + "; ".join(
                f"{label} " + " ".join(f"{run['wall_s']:.2f}" for run in runs)
                for label, runs in tries.items()))
        measured.append((executor, {label: min(runs, key=lambda run: run["wall_s"])
                                    for label, runs in tries.items()}))
    baseline = cutout2d_baseline(state, archive, catalog, args.baseline_sample)
    summary = [(executor, report(args, executor, runs, baseline))
               for executor, runs in measured]
    if len(summary) > 1:
        print("runs in order (wall ratios to the engine run after each; per CPU second):")
        for executor, ratios in summary:
            print(f"  {executor:9s}: cold / engine {ratios[0]:.2f}, warm / engine "
                  f"{ratios[1]:.2f}; per CPU second {ratios[2]:.2f}, {ratios[3]:.2f}")
    return 0


def report(args: argparse.Namespace, executor: str, runs: dict, baseline: float
           ) -> tuple[float, float, float, float]:
    """Print one executor's cold and warm jobs against the engine run after them; returns
    (cold, warm) / engine in stamps per wall second, then per CPU second."""
    runs = dict(runs)
    engine = runs.pop("engine")
    print(f"batch job: {args.targets} targets x {len(BANDS)} bands (BGSUB), {SIZE_PIX} px "
          f"stamps, {args.workers} workers, executor {executor}, demo archive")
    for label, figures in runs.items():
        rate = figures["stamps"] / figures["wall_s"]
        start = (f", worker processes started in {figures['pool_start_s']:.2f} s before"
                 if figures["pool_start_s"] else "")
        print(f"  {label:5s}: {figures['phase']}, {figures['stamps']} stamps in "
              f"{figures['wall_s']:.1f} s = {rate:.0f} stamps/s, peak RSS "
              f"{figures['peak_rss_mb']:.0f} MB, bundle {figures['bundle_mb']:.0f} MB, "
              f"job document {figures['document_kb']:.1f} kB{start}")
    cold = runs["cold"]["stamps"] / runs["cold"]["wall_s"]
    warm = runs["warm"]["stamps"] / runs["warm"]["wall_s"]
    engine_rate = engine["stamps"] / engine["wall_s"]
    print(f"  engine bundle_tasks, same stamps, {args.workers} workers: {engine['stamps']} "
          f"stamps in {engine['wall_s']:.1f} s = {engine_rate:.0f} stamps/s")
    print(f"  astropy Cutout2D one by one (sample): {baseline:.0f} stamps/s")
    print(f"  ratios: cold job / engine = {cold / engine_rate:.2f} (aim >= 0.5), warm job / "
          f"engine = {warm / engine_rate:.2f} (aim >= 0.9), cold job / Cutout2D = "
          f"{cold / baseline:.1f}x, warm / cold = {warm / cold:.1f}x")
    per_cpu = {label: f["stamps"] / f["cpu_s"] for label, f in {**runs, "engine": engine}.items()}
    print(f"  per CPU second (steadier on a busy machine): cold {per_cpu['cold']:.0f}, warm "
          f"{per_cpu['warm']:.0f}, engine {per_cpu['engine']:.0f} stamps/cpu-s; cold / "
          f"engine = {per_cpu['cold'] / per_cpu['engine']:.2f}, warm / engine = "
          f"{per_cpu['warm'] / per_cpu['engine']:.2f}")
    for label, figures in runs.items():
        parts, cpu_parts = figures["bookkeeping_s"], figures["bookkeeping_cpu_s"]
        share = sum(parts.values()) / figures["wall_s"]
        cpu_share = sum(cpu_parts.values()) / figures["cpu_s"]
        detail = ", ".join(f"{part} {seconds:.2f} s" for part, seconds in parts.items())
        drawn = figures["coverage_s"]
        print(f"  bookkeeping {label}: {100 * share:.1f} % of the job's time (aim < 15 %), "
              f"{100 * cpu_share:.1f} % of its CPU time: {detail}"
              + (" (the job's process only: not its workers')" if executor != "local"
                 else "")
              + ("; its coverage MOC drawn on first request after it: "
                 + (f"{drawn:.2f} s" if drawn is not None else "none")))
    return (cold / engine_rate, warm / engine_rate, per_cpu["cold"] / per_cpu["engine"],
            per_cpu["warm"] / per_cpu["engine"])


def empty_cache(state: Path) -> None:
    """Remove every cached cutout, every job and every remembered (target, image)
    outcome: the next job starts cold, as on a catalog never seen (with outcomes left from
    an earlier run, a job would look each target up, find its stamp evicted, cut it and
    remember it again)."""
    from vo_service.jobs.store import JobStore

    for cached in (state / "cache").glob("*"):
        subprocess.run(["rm", "-rf", str(cached)], check=True)
    if (state / "jobs" / "jobs.sqlite").exists():
        store = JobStore(state / "jobs")
        for job in store.list():
            store.delete(job.job_id)
        store.forget_stamp_outcomes(0.0)
        store.close()


def run_child(args: argparse.Namespace, state: Path, archive: Path, catalog: Path,
              *extra: str) -> dict:
    """One measurement in a process of its own (its peak RSS is its own): the figures it
    prints as JSON on its last line. The disk's writeback of the runs before (a GB of
    bundle each) is waited for first, so that it does not fall into this run."""
    os.sync()
    output = subprocess.run(
        [sys.executable, __file__, "--workers", str(args.workers), *extra,
         "--child", str(state), str(archive), str(catalog)],
        check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_matrix(state: Path, archive: Path, catalog: Path, args: argparse.Namespace) -> int:
    """Three cold jobs: image stamps, + PSF, + photometry; print rates and costs."""
    runs = {}
    for label in MATRIX:
        empty_cache(state)
        runs[label] = run_child(args, state, archive, catalog, "--variant", label,
                                "--executor", args.executor.split(",")[0])
    print(f"product matrix: {args.targets} targets x {len(BANDS)} bands, {SIZE_PIX} px "
          f"stamps, {args.workers} workers, cold cache each, demo archive")
    for label, figures in runs.items():
        rate = figures["stamps"] / figures["wall_s"]
        print(f"  {label:12s}: {figures['phase']}, {figures['stamps']} files in "
              f"{figures['wall_s']:.1f} s = {rate:.0f} files/s, peak RSS "
              f"{figures['peak_rss_mb']:.0f} MB")
    images, psf, photometry = (runs[label]["wall_s"] for label in MATRIX)
    print(f"  the PSF products add {100 * (psf / images - 1):.0f} % to the image stamps' "
          f"time; photometry adds {100 * (photometry / psf - 1):.0f} % to that "
          f"({100 * (photometry - psf) / images:.0f} % of the image stamps' time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
