"""The ``vo-service`` command: serve, index, check, cutout, combine, timeseries, psf,
catalog-rows, worker, ...

Each sub-command is a thin wrapper: argument parsing here, the work in the module that
owns it, imported lazily so that ``vo-service --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vo_service.config import EXECUTORS, Settings, load_settings

log = logging.getLogger("vo_service")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    if getattr(args, "data_root", None):
        from dataclasses import replace

        settings = replace(settings, data_roots=tuple(Path(p) for p in args.data_root))
    if getattr(args, "state_dir", None):
        from dataclasses import replace

        settings = replace(settings, state_dir=Path(args.state_dir))
    return settings


def ensure_demo_data(settings: Settings) -> Settings:
    """Without configured data roots, build (once) and use the demo archive under the state dir."""
    if settings.data_roots:
        return settings
    from dataclasses import replace

    from vo_service.archive.demo import build_demo_archive

    demo_dir = settings.state_dir / "demo-archive"
    if not (demo_dir / ".complete").exists():
        log.info("no data roots configured: building the demo archive in %s", demo_dir)
        build_demo_archive(demo_dir)
        (demo_dir / ".complete").touch()
    return replace(settings, data_roots=(demo_dir,))


def cmd_index(args: argparse.Namespace) -> int:
    from vo_service.archive.index import run_index

    settings = _settings(args)
    if args.demo_if_empty:
        settings = ensure_demo_data(settings)
    report = run_index(settings)
    print(report.summary())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Verify the cutout cache against its files and repair it (exit 1 if it needed repair)."""
    from vo_service.cache import CutoutCache
    from vo_service.cache.check import check_cache

    settings = _settings(args)
    cache = CutoutCache(settings.cache_dir, settings.limits.cache_bytes)
    report = check_cache(cache, min_age_seconds=args.min_age)
    print(report.summary())
    return 0 if report.consistent else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from vo_service.archive.index import run_index
    from vo_service.errors import storage_failure
    from vo_service.serving import serve

    settings = _settings(args)
    if args.executor or args.scheduler:
        from dataclasses import replace

        settings = replace(settings, executor=args.executor or settings.executor,
                           scheduler=args.scheduler or settings.scheduler)
    if settings.executor == "dask" and not settings.scheduler:
        print("--executor dask needs --scheduler tcp://HOST:PORT (or VO_SERVICE_SCHEDULER)",
              file=sys.stderr)
        return 2
    settings = ensure_demo_data(settings)
    if args.host:
        from dataclasses import replace

        settings = replace(settings, host=args.host)
    if args.port:
        from dataclasses import replace

        settings = replace(settings, port=args.port)
    if args.workers is not None:
        if args.workers < 1:
            print("--workers needs a number of processes >= 1", file=sys.stderr)
            return 2
        from dataclasses import replace

        settings = replace(settings, workers=args.workers)
    try:  # once, before any worker process starts
        print(run_index(settings).summary())
    except Exception as exc:
        problem = storage_failure(exc)
        if problem is None:
            raise
        # The index as it is still answers queries; what needs the disk answers 503.
        log.warning("the state directory %s cannot be written (%s): serving the archive "
                    "index read-only as it was last built, without re-indexing; jobs and "
                    "new cutouts answer 503 ServiceUnavailable until it can be written again",
                    settings.state_dir, problem)
    if settings.executor == "dask":
        print(f"catalog jobs cut on the Dask cluster at {settings.scheduler}")
    elif settings.executor == "processes":
        print(f"catalog jobs cut on {settings.worker_processes or os.cpu_count()} worker "
              "processes")
    processes = f" with {settings.workers} worker processes" if settings.workers > 1 else ""
    print(f"serving on http://{settings.host}:{settings.port}/{processes}")
    try:
        serve(settings, log_level=logging.getLogger().getEffectiveLevel())
    except Exception as exc:
        problem = storage_failure(exc)
        if problem is None:
            raise
        log.error("cannot open the databases in the state directory %s (%s): free space "
                  "on its disk, then start again", settings.state_dir, problem)
        return 1
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run ``dask worker`` with this interpreter (so the worker imports this vo-service)."""
    import os

    command = [sys.executable, "-m", "distributed.cli.dask_worker", args.scheduler,
               "--nworkers", str(args.nworkers), "--nthreads", str(args.nthreads),
               # imported at worker start: a worker without vo-service fails at once
               "--preload", "vo_service.jobs.remote"]
    if args.name:
        command += ["--name", args.name]
    try:
        import distributed  # noqa: F401

        import vo_service.jobs.remote  # noqa: F401  (what the tasks run)
    except ImportError as exc:
        print(f"vo-service worker needs the dask extra (pip install 'vo-service[dask]'): {exc}",
              file=sys.stderr)
        return 2
    os.execv(sys.executable, command)
    return 0  # pragma: no cover - execv does not return


def cmd_demo_archive(args: argparse.Namespace) -> int:
    from vo_service.archive.demo import build_demo_archive

    summary = build_demo_archive(Path(args.directory), scale=args.scale, seed=args.seed)
    print(summary)
    return 0


def cmd_cutout(args: argparse.Namespace) -> int:
    from vo_service.cutout_command import run_cutout_command

    return run_cutout_command(args)


def cmd_combine(args: argparse.Namespace) -> int:
    from vo_service.mosaic_commands import run_combine_command

    return run_combine_command(args)


def cmd_timeseries(args: argparse.Namespace) -> int:
    from vo_service.timeseries_command import run_timeseries_command

    return run_timeseries_command(args, _settings(args))


def cmd_psf(args: argparse.Namespace) -> int:
    from vo_service.products_command import run_psf_command

    return run_psf_command(args, _settings(args))


def cmd_catalog_rows(args: argparse.Namespace) -> int:
    from vo_service.products_command import run_catalog_rows_command

    return run_catalog_rows_command(args, _settings(args))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vo-service`` command."""
    parser = argparse.ArgumentParser(prog="vo-service", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML settings file (default: $VO_SERVICE_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", action="append", help="FITS tree to serve (repeatable)")
        p.add_argument("--state-dir", help="directory for the index, cache and jobs")

    p = sub.add_parser("serve", help="index the data roots and run the web service")
    data_options(p)
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000)")
    p.add_argument("--workers", type=int,
                   help="server processes sharing the port and the state dir (default 1; "
                        "more use more cores for /sync; one of them runs the jobs)")
    p.add_argument("--executor", choices=EXECUTORS,
                   help="where catalog jobs cut: worker processes of this machine (default), "
                        "threads of the server, or a Dask cluster")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a Dask worker for catalog jobs (dask worker wrapper)")
    p.add_argument("scheduler", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--nworkers", default="1",
                   help="worker processes (a number, or 'auto' for one per core)")
    p.add_argument("--nthreads", type=int, default=1, help="threads per worker process")
    p.add_argument("--name", help="worker name shown by the scheduler")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("index", help="scan the data roots into the archive index")
    data_options(p)
    p.add_argument("--demo-if-empty", action="store_true",
                   help="build and index the demo archive when no data root is configured")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("check", help="verify the cutout cache against its files and repair it")
    data_options(p)
    p.add_argument("--min-age", type=float, default=0.0,
                   help="leave unindexed files younger than this many seconds (writes in "
                        "flight while the service runs); default 0: the service is stopped")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo-archive", help="build a synthetic multi-instrument survey archive")
    p.add_argument("directory", help="where to write the FITS files")
    p.add_argument("--scale", type=int, default=1,
                   help="size factor: 1 is small (< 300 MB), larger values give bigger tiles")
    p.add_argument("--seed", type=int, default=42,
                   help="random seed (the archive is deterministic)")
    p.set_defaults(func=cmd_demo_archive)

    p = sub.add_parser("cutout", help="cut stamps from local FITS files")
    from vo_service.cutout_command import add_cutout_arguments

    add_cutout_arguments(p)
    p.set_defaults(func=cmd_cutout)

    p = sub.add_parser("combine", help="combine stamps of one position (mean, median, sum, "
                                       "inverse-variance mean) with a count per pixel")
    from vo_service.mosaic_commands import add_combine_arguments

    add_combine_arguments(p)
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser("timeseries", help="one target across every epoch: stack, cube, "
                                          "light curve (local files or the archive index)")
    from vo_service.timeseries_command import add_timeseries_arguments

    add_timeseries_arguments(p)
    p.set_defaults(func=cmd_timeseries)

    from vo_service.products_command import add_catalog_rows_arguments, add_psf_arguments

    p = sub.add_parser("psf", help="the PSF at a position (PSF files or the archive index)")
    add_psf_arguments(p)
    p.set_defaults(func=cmd_psf)
    p = sub.add_parser("catalog-rows", help="catalog rows inside a stamp at a position "
                                            "(catalog files or the archive index)")
    add_catalog_rows_arguments(p)
    p.set_defaults(func=cmd_catalog_rows)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vo-service`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
