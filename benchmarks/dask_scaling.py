"""Benchmark: the catalog batch job on the local pool vs a Dask cluster of 1 and 2 workers.

The same job as ``batch_job.py`` (N targets x 4 bands, BGSUB, 64 px stamps, demo archive),
each run from a cold state (fresh cutout cache and job store, same archive index). Dask
runs use a ``distributed.LocalCluster`` of worker *processes* with one thread each on this
machine, so they show the cost of shipping units to processes and the scaling from 1 to
2 workers; on one machine the local pool (threads) is the baseline to beat.

    .venv/bin/python benchmarks/dask_scaling.py [--targets 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_job import BANDS, SIZE_PIX, make_catalog  # noqa: E402


def run_job(settings, catalog: bytes, workers: int) -> dict:
    """One catalog job through the job service; wall time and stamps."""
    from vo_service.archive.index import ArchiveIndex
    from vo_service.jobs.store import Parameter
    from vo_service.protocols.uws import create_job_service

    parameters = [Parameter("UPLOAD", "cat,param:cat"), Parameter("SIZE", str(SIZE_PIX)),
                  Parameter("PRODUCTTYPE", "BGSUB"), Parameter("WORKERS", str(workers))]
    parameters += [Parameter("BANDNAME", band) for band in BANDS]

    async def main() -> dict:
        service = create_job_service(settings, ArchiveIndex(settings.index_path))
        await service.start()
        started = time.perf_counter()
        job = service.create(parameters, {"CAT": ("targets.csv", catalog)},
                             base_url="http://localhost/async")
        service.run(job.job_id)
        while job.phase.value in ("PENDING", "QUEUED", "EXECUTING"):
            job = await service.wait(job.job_id, 30, None)
        wall = time.perf_counter() - started
        from vo_service.products.manifest import read_manifest

        rows = read_manifest(service.store.job_dir(job.job_id) / "manifest.xml")
        stamps = sum(row.content_type == "application/fits" for row in rows)  # reached there
        await service.stop()
        return {"phase": job.phase.value, "wall_s": wall, "stamps": stamps}

    return asyncio.run(main())


def _timed_unit(place, task) -> float:  # noqa: ANN001 - runs on a Dask worker
    from vo_service.jobs.remote import run_remote_unit

    started = time.perf_counter()
    run_remote_unit(place, task)
    return time.perf_counter() - started


def cutting_only(settings, catalog: bytes, client) -> float:  # noqa: ANN001
    """Wall time of the job's units alone, submitted straight to the cluster (no runner:
    no results, progress, bundle or manifest), from a cold cache."""
    from vo_service.archive.index import ArchiveIndex
    from vo_service.catalogs import read_catalog
    from vo_service.jobs.batch import plan_batch
    from vo_service.jobs.batch_params import parse_batch_request
    from vo_service.jobs.remote import WorkPlace
    from vo_service.jobs.store import JobStore, Parameter

    parameters = [Parameter("UPLOAD", "cat,param:cat"), Parameter("SIZE", str(SIZE_PIX)),
                  Parameter("PRODUCTTYPE", "BGSUB")]
    parameters += [Parameter("BANDNAME", band) for band in BANDS]
    request = parse_batch_request(parameters, settings.limits)
    catalog_path = settings.state_dir / "targets.csv"
    catalog_path.write_bytes(catalog)
    plan = plan_batch(read_catalog(catalog_path, filename="targets.csv"), request,
                      ArchiveIndex(settings.index_path))
    JobStore(settings.jobs_dir).close()  # the tables the workers remember outcomes in
    place = WorkPlace(request.formats, settings.limits.max_cutout_pixels,
                      str(settings.cache_dir), settings.limits.cache_bytes,
                      settings.limits.cache_min_free_bytes, str(settings.jobs_dir),
                      str(settings.state_dir))
    started = time.perf_counter()
    client.gather([client.submit(_timed_unit, place, task, pure=False)
                   for task in plan.tasks])
    return time.perf_counter() - started


def fresh_state(root: Path, label: str, index: Path) -> Path:
    """A state dir with a copy of the archive index and nothing else (cold cache)."""
    state = root / f"state-{label}"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    shutil.copy(index, state / "index.sqlite")
    return state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="reuse/keep the archive and state here")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from vo_service.archive.demo import build_demo_archive
    from vo_service.archive.index import run_index
    from vo_service.config import Settings

    root = args.keep or Path(tempfile.mkdtemp(prefix="vo-bench-dask-"))
    archive = root / "archive"
    if not (archive / "sources.csv").exists():
        build_demo_archive(archive)
    base = Settings(data_roots=(archive,), state_dir=root / "state-index")
    run_index(base)
    catalog = make_catalog(archive, args.targets)

    runs: dict[str, dict] = {}
    cutting: dict[int, float] = {}
    settings = replace(base, state_dir=fresh_state(root, "local", base.index_path))
    runs["local pool, 2 threads"] = run_job(settings, catalog, workers=2)
    for n_workers in (1, 2):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            settings = replace(base, state_dir=fresh_state(root, f"dask{n_workers}",
                                                           base.index_path),
                               executor="dask", scheduler=cluster.scheduler_address)
            runs[f"dask, {n_workers} worker process{'es' if n_workers > 1 else ''}"] = \
                run_job(settings, catalog, workers=2)
            settings = replace(settings, state_dir=fresh_state(root, f"units{n_workers}",
                                                               base.index_path))
            cutting[n_workers] = cutting_only(settings, catalog, client)

    print(f"catalog job: {args.targets} targets x {len(BANDS)} bands (BGSUB), {SIZE_PIX} px "
          "stamps, demo archive, cold cache each run")
    for label, figures in runs.items():
        rate = figures["stamps"] / figures["wall_s"]
        print(f"  {label:26s}: {figures['phase']}, {figures['stamps']} stamps in "
              f"{figures['wall_s']:.1f} s = {rate:.0f} stamps/s")
    one, two = (runs[k]["wall_s"] for k in runs if k.startswith("dask"))
    local = runs["local pool, 2 threads"]["wall_s"]
    print(f"  scaling of the whole job: dask 1 -> 2 workers = {one / two:.2f}x faster; "
          f"local pool / dask 2 workers wall time = {local / two:.2f}")
    print(f"  cutting only (units straight to the cluster, no job bookkeeping): "
          f"1 worker {cutting[1]:.1f} s, 2 workers {cutting[2]:.1f} s = "
          f"{cutting[1] / cutting[2]:.2f}x faster")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
