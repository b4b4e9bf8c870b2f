"""Where the per-image units of a catalog job run: this process's threads, worker
processes of this machine, or Dask.

On the local executor a unit is cut with the service's own cache and job store. On worker
processes or Dask a unit travels as a plain picklable description (``WorkPlace`` +
``StampTask``: image path and HDU, targets with their sizes and file stems, formats,
limits, cache and job directories); the worker process opens its own cache and job-store
handles on the shared state directory (once per process) and runs the very same
``cut_task``, appending its stamps to the job's bundle itself on this machine (as the
threads do), packing them as a bundle part on Dask (``jobs/bundle_parts.py``). A unit is
idempotent (each run writes stamps of its own, outcomes are upserted), so Dask may retry
it on another worker when its worker dies.

The worker processes of this machine start from a ``forkserver`` (the server has threads,
so it never forks itself); the forkserver preloads this module, so a worker starts in
milliseconds. The pool lives across jobs; a worker that dies breaks the pool
(``BrokenProcessPool``): the next unit starts a new pool, where the units the old one held
run once more (``jobs/executors.as_finished``), and every worker ends with the server.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from vo_service.config import Settings
from vo_service.engine import batch as engine_batch
from vo_service.engine.executors import DaskExecutor, Executor, LocalExecutor, ProcessExecutor
from vo_service.jobs.batch_cut import StampTask
from vo_service.jobs.bundle_parts import PackedTask, cut_and_pack

# Seconds each Dask or worker-process unit sleeps before cutting: only tests set it (to
# kill a worker while units are running); it travels inside the unit's description.
TASK_DELAY_SECONDS = 0.0
T = TypeVar("T")


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
    append_to: str | None = None  # the bundle itself, on the coordinator's machine
    job_url: str | None = None  # where the job is served: the units make its manifest rows


def run_remote_unit(place: WorkPlace, task: StampTask) -> PackedTask:
    """Cut one unit in a worker process (Dask, or this machine's) with this process's own
    cache and store handles."""
    if place.delay_seconds:
        time.sleep(place.delay_seconds)
    cache, store = _worker_handles(place.cache_dir, place.cache_bytes,
                                   place.cache_min_free_bytes, place.jobs_dir)
    return cut_and_pack(task, cache, store, place.formats, place.max_pixels,
                        Path(place.job_dir),
                        Path(place.append_to) if place.append_to else None, place.job_url)


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


class WorkerProcesses:
    """An ``Executor`` on worker processes of this machine that outlives its failures: the
    pool starts at the first submission (from a forkserver), and a pool broken by a dead
    worker is replaced at the next one. Futures of a broken pool fail with
    ``BrokenProcessPool``."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._pool: ProcessExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            for _ in range(2):
                if self._pool is None:
                    self._pool = ProcessExecutor(self.max_workers, start_job_worker,
                                                 _forkserver(), initargs=(os.getpid(),))
                try:
                    return self._pool.submit(fn, *args, **kwargs)
                except BrokenProcessPool:  # a worker died: its futures have failed
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
            raise BrokenProcessPool("worker processes for catalog jobs cannot start")

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the worker processes (after their units, with ``wait``)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def start_job_worker(server_pid: int) -> None:
    """Initializer of the worker processes: the engine's (images kept open between units),
    and an end when the server that started them ends, however it ends.

    A worker waits for units on a queue whose writing end it holds itself, and holds the
    forkserver's "clients alive" pipe: were the server killed (SIGKILL, out of memory, a
    process manager's SIGTERM without a clean shutdown), the workers would wait for ever
    and keep the forkserver alive with them. A daemon thread watches the server's process
    (a pidfd where Linux has one, else a poll every second) and ends this worker with it.
    """
    engine_batch.start_worker()
    threading.Thread(target=_exit_with, args=(server_pid,), name="vo-server-watch",
                     daemon=True).start()


def _exit_with(pid: int) -> None:
    """Wait until process ``pid`` has ended, then end this process at once."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd here: poll
        handle = None
    if handle is not None:
        select.select([handle], [], [])  # readable once the process has ended
    else:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:  # alive, but another user's (a reused pid): keep on
                pass
            time.sleep(1.0)
    os._exit(0)


def _forkserver() -> Any:
    """The forkserver context, preloading this module (and so the engine and the cache);
    "spawn" where there is no forkserver (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class BatchExecutors:
    """The executors of catalog jobs: a pool of threads per job locally, or worker
    processes of this machine, or a Dask client, shared by the jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._dask: DaskExecutor | None = None
        self._processes: WorkerProcesses | None = None
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

    def processes(self) -> WorkerProcesses:
        """The worker processes of this machine (``worker_processes``; 0: one per core),
        started at the first unit."""
        with self._lock:
            if self._processes is None:
                size = self.settings.worker_processes or os.cpu_count() or 1
                self._processes = WorkerProcesses(size)
            return self._processes

    @contextlib.contextmanager
    def for_job(self, workers: int, name: str, cache: Any, store: Any,
                formats: tuple[str, ...], job_dir: Path, bundle_file: Path | None = None,
                job_url: str | None = None
                ) -> Iterator[tuple[Executor, Callable[[StampTask], PackedTask], int]]:
        """(executor, function of a unit, units in flight) for one job; units on this
        machine (threads, processes) append their stamps to ``bundle_file`` themselves,
        Dask units write parts; with ``job_url``, units make their manifest rows."""
        max_pixels = self.settings.limits.max_cutout_pixels
        if self.kind in ("dask", "processes"):
            limits = self.settings.limits
            place = WorkPlace(formats, max_pixels, str(self.settings.cache_dir),
                              limits.cache_bytes, limits.cache_min_free_bytes,
                              str(self.settings.jobs_dir),
                              str(job_dir), TASK_DELAY_SECONDS, job_url=job_url)
            if self.kind == "dask":
                executor: Any = self.dask()
                in_flight = executor.max_workers * 2
            else:
                executor = self.processes()
                place = replace(place, append_to=str(bundle_file) if bundle_file else None)
                in_flight = min(workers, executor.max_workers) * 2
            yield executor, functools.partial(run_remote_unit, place), in_flight
            return
        with LocalExecutor(workers, name=name) as pool:
            yield pool, (lambda task: cut_and_pack(task, cache, store, formats, max_pixels,
                                                   job_dir, bundle_file, job_url)
                         ), workers * 2

    def close(self) -> None:
        """Stop the worker processes; disconnect from the cluster (the cluster itself keeps
        running)."""
        with self._lock:
            if self._dask is not None:
                self._dask.shutdown()
                self._dask = None
            processes, self._processes = self._processes, None
        if processes is not None:
            processes.shutdown(wait=True, cancel_futures=True)
