"""Where batch work runs: the ONE ``Executor`` interface and its implementations.

Units of work (e.g. all cutouts of one image) are submitted and collected as they finish:
on threads of this process (``LocalExecutor``; numpy and FITS reads release the GIL for
the heavy parts), on worker processes of this machine (``ProcessExecutor``; CPU-bound
work such as decompression or many small stamps), or on a ``dask.distributed`` cluster
(``DaskExecutor``, the optional ``dask`` extra), where work must be plain picklable
functions and arguments. All hand back ``concurrent.futures.Future`` objects, so the
Python API, the CLI (`engine.batch.run_tasks`) and catalog jobs (`jobs.executors`) run
units the same way on each.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import fields
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
D = TypeVar("D")


class Executor(Protocol):
    """Runs callables somewhere and hands back futures."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Start ``fn(*args, **kwargs)``; the future holds its result or exception."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally drop work not yet started."""
        ...


class LocalExecutor(ThreadPoolExecutor):
    """An ``Executor`` on a pool of threads in this process; leaving its ``with`` block
    drops work not yet started."""

    def __init__(self, max_workers: int, name: str = "vo-job") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=name)
        self.max_workers = max_workers

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_futures=True)


class ProcessExecutor(ProcessPoolExecutor):
    """An ``Executor`` on worker processes of this machine (functions and arguments must
    pickle); ``initializer(*initargs)`` runs once in each worker as it starts; ``mp_context`` says
    how workers start (e.g. ``multiprocessing.get_context("forkserver")`` from a process
    with threads, which must not fork itself). Leaving its ``with`` block drops work not
    yet started."""

    def __init__(self, max_workers: int, initializer: Callable[..., object] | None = None,
                 mp_context: Any = None, initargs: tuple = ()) -> None:
        super().__init__(max_workers=max_workers, initializer=initializer,
                         mp_context=mp_context, initargs=initargs)
        self.max_workers = max_workers

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """An ``Executor`` on a ``dask.distributed`` cluster (``dask[distributed]`` extra).

    Each submission is retried on another worker if its worker dies (``retries``); its
    future is a ``concurrent.futures.Future`` fed from the Dask future's completion, and
    cancelling it cancels the Dask task (ABORT drops work not yet finished).
    """

    def __init__(self, scheduler: str, *, retries: int = 2, client: Any = None) -> None:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise RuntimeError("executor 'dask' needs the dask extra: "
                               "pip install 'vo-service[dask]'") from exc
        self.scheduler = scheduler
        self.retries = retries
        self.client = client or Client(scheduler, set_as_default=False, timeout=30)

    @property
    def max_workers(self) -> int:
        """Threads on the cluster's workers now (at least 1): how much can run at once."""
        threads = self.client.nthreads()
        return max(1, sum(threads.values()))

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        remote = self.client.submit(fn, *args, retries=self.retries, pure=False, **kwargs)
        return _bridge(remote)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.client.close()


class _BridgedFuture(Future):
    """A local future mirroring a Dask future; ``cancel()`` also cancels the Dask task."""

    remote: Any = None

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled and self.remote is not None:
            self.remote.cancel()
        return cancelled


def _bridge(remote: Any) -> Future:
    local = _BridgedFuture()
    local.remote = remote

    def copy_outcome(finished: Any) -> None:
        if finished.status == "cancelled":
            local.cancel()
            return
        try:
            outcome = finished.result()
        except BaseException as exc:  # noqa: BLE001 - hand every failure to the runner
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                local.set_exception(exc)
        else:
            with contextlib.suppress(InvalidStateError):
                local.set_result(outcome)

    remote.add_done_callback(copy_outcome)
    return local


def pickled_as_arguments(cls: type[D]) -> type[D]:
    """Make a dataclass pickle as its fields, the arguments of its constructor: records
    of units (targets, outcomes, manifest rows) travel to and from worker processes by
    the hundred, and unpickling them this way takes a third of the default's time."""
    values = operator.attrgetter(*(f.name for f in fields(cls)))
    cls.__reduce__ = lambda self: (cls, values(self))  # type: ignore[assignment]
    return cls
