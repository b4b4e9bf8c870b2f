"""How a job runs its units on an executor (`vo_service.engine.executors`: local threads,
or Dask, where units are plain picklable descriptions of work, see ``jobs/remote.py``):
a bounded number in flight, stopping when the job is aborted, a unit whose worker died run
once more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

from vo_service.engine.executors import Executor

T = TypeVar("T")


def as_finished(
    executor: Executor, fn: Callable[[Any], T], items: list[Any], *, in_flight: int,
    should_stop: Callable[[], bool] = lambda: False, poll_seconds: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Iterator[tuple[Any, Future[T]]]:
    """Run ``fn(item)`` for each item with at most ``in_flight`` running; yield as they end.

    Stops submitting new work as soon as ``should_stop()`` is true (checked at least every
    ``poll_seconds``), then yields what is still running as it finishes. An item whose run
    failed with one of ``retry_on`` (e.g. its worker process died) runs once more before
    its failure is yielded.
    """
    pending = iter(items)
    running: dict[Future[T], Any] = {}
    retried: set[int] = set()  # ids of items already run again

    def again(future: Future[T], item: Any) -> bool:
        """Run ``item`` once more if its run failed with one of ``retry_on``."""
        if not retry_on or id(item) in retried or future.cancelled() or should_stop() \
                or not isinstance(future.exception(), retry_on):
            return False
        retried.add(id(item))
        running[executor.submit(fn, item)] = item
        return True

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
            item = running.pop(future)
            if again(future, item):
                continue
            fill()  # the workers go on while the caller handles what ended
            yield item, future
        if should_stop():  # drop work that has not started; what runs finishes
            for future in [f for f in running if f.cancel()]:
                running.pop(future)
        fill()


_END = object()
