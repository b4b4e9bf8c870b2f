"""Where job work runs: the ``Executor`` interface and its local thread-pool implementation.

A job's coordinating thread submits units of work (e.g. all cutouts of one image) and
collects them as they finish. The local executor runs them on threads of this process
(numpy and FITS reads release the GIL for the heavy parts); a Dask implementation can
come later behind the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Executor(Protocol):
    """Runs callables somewhere and hands back futures."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Start ``fn(*args, **kwargs)``; the future holds its result or exception."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; optionally drop work not yet started."""
        ...


class LocalExecutor:
    """An ``Executor`` on a pool of threads in this process."""

    def __init__(self, max_workers: int, name: str = "vo-job") -> None:
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True, cancel_futures=True)


def as_finished(
    executor: Executor, fn: Callable[[Any], T], items: list[Any], *, in_flight: int,
    should_stop: Callable[[], bool] = lambda: False, poll_seconds: float = 0.5,
) -> Iterator[tuple[Any, Future[T]]]:
    """Run ``fn(item)`` for each item with at most ``in_flight`` running; yield as they end.

    Stops submitting new work as soon as ``should_stop()`` is true (checked at least every
    ``poll_seconds``), then yields what is still running as it finishes.
    """
    pending = iter(items)
    running: dict[Future[T], Any] = {}

    def fill() -> None:
        while len(running) < in_flight and not should_stop():
            item = next(pending, _END)
            if item is _END:
                return
            running[executor.submit(fn, item)] = item

    fill()
    while running:
        done, _ = wait(list(running), timeout=poll_seconds, return_when=FIRST_COMPLETED)
        for future in done:
            yield running.pop(future), future
        if should_stop():  # drop work that has not started; what runs finishes
            for future in [f for f in running if f.cancel()]:
                running.pop(future)
        fill()


_END = object()
