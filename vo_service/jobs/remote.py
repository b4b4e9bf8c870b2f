"""Where the per-image units of a catalog job run: this process's threads, or Dask.

On the local executor a unit is cut with the service's own cache and job store. On Dask a
unit travels as a plain picklable description (``WorkPlace`` + ``StampTask``: image path
and HDU, targets with their sizes and file stems, formats, limits, cache and job
directories); the worker process opens its own cache and job-store handles on the shared
state directory (once per process) and runs the very same ``cut_task``
(packing its stamps as a bundle part, ``jobs/bundle_parts.py``). A unit is
idempotent (each run writes a part of its own, outcomes are upserted), so Dask may retry
it on another worker when its worker dies.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vo_service.config import Settings
from vo_service.engine.executors import DaskExecutor, Executor, LocalExecutor
from vo_service.jobs.batch_cut import StampTask
from vo_service.jobs.bundle_parts import PackedTask, cut_and_pack

# Seconds each Dask unit sleeps before cutting: only tests set it (to kill a worker while
# units are running); it travels inside the unit's description.
TASK_DELAY_SECONDS = 0.0


@dataclass(frozen=True)
class WorkPlace:
    """Everything a worker needs besides the unit itself (plain values only)."""

    formats: tuple[str, ...]
    max_pixels: int
    cache_dir: str
    cache_bytes: int
    cache_min_free_bytes: int  # the operator's margin holds on the workers' disks too
    jobs_dir: str
    job_dir: str  # where the unit writes its bundle part
    delay_seconds: float = 0.0


def run_remote_unit(place: WorkPlace, task: StampTask) -> PackedTask:
    """Cut one unit on a Dask worker with this process's own cache and store handles."""
    if place.delay_seconds:
        time.sleep(place.delay_seconds)
    cache, store = _worker_handles(place.cache_dir, place.cache_bytes,
                                   place.cache_min_free_bytes, place.jobs_dir)
    return cut_and_pack(task, cache, store, place.formats, place.max_pixels,
                        Path(place.job_dir))


_handles_lock = threading.Lock()


@functools.cache
def _open_handles(cache_dir: str, cache_bytes: int, min_free_bytes: int,
                  jobs_dir: str) -> tuple[Any, Any]:
    from vo_service.cache import CutoutCache
    from vo_service.jobs.store import JobStore

    return (CutoutCache(Path(cache_dir), cache_bytes, min_free_bytes=min_free_bytes),
            JobStore(Path(jobs_dir)))


def _worker_handles(cache_dir: str, cache_bytes: int, min_free_bytes: int,
                    jobs_dir: str) -> tuple[Any, Any]:
    with _handles_lock:
        return _open_handles(cache_dir, cache_bytes, min_free_bytes, jobs_dir)


class BatchExecutors:
    """The executors of catalog jobs: a pool per job locally, one shared Dask client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._dask: DaskExecutor | None = None
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        return self.settings.executor

    def dask(self) -> DaskExecutor:
        """The Dask client, connected at first use."""
        with self._lock:
            if self._dask is None:
                if not self.settings.scheduler:
                    raise RuntimeError("executor 'dask' needs a scheduler address "
                                       "(--scheduler / VO_SERVICE_SCHEDULER)")
                self._dask = DaskExecutor(self.settings.scheduler)
            return self._dask

    @contextlib.contextmanager
    def for_job(self, workers: int, name: str, cache: Any, store: Any,
                formats: tuple[str, ...], job_dir: Path, bundle_file: Path | None = None
                ) -> Iterator[tuple[Executor, Callable[[StampTask], PackedTask], int]]:
        """(executor, function of a unit, units in flight) for one job; units of the local
        pool append their stamps to ``bundle_file`` themselves, Dask units write parts."""
        max_pixels = self.settings.limits.max_cutout_pixels
        if self.kind == "dask":
            executor = self.dask()
            limits = self.settings.limits
            place = WorkPlace(formats, max_pixels, str(self.settings.cache_dir),
                              limits.cache_bytes, limits.cache_min_free_bytes,
                              str(self.settings.jobs_dir),
                              str(job_dir), TASK_DELAY_SECONDS)
            yield executor, functools.partial(run_remote_unit, place), executor.max_workers * 2
            return
        with LocalExecutor(workers, name=name) as pool:
            yield pool, (lambda task: cut_and_pack(task, cache, store, formats, max_pixels,
                                                   job_dir, bundle_file)), workers * 2

    def close(self) -> None:
        """Disconnect from the cluster (the cluster itself keeps running)."""
        with self._lock:
            if self._dask is not None:
                self._dask.shutdown()
                self._dask = None
