"""How a job runs its units: a unit whose worker died runs once more, other failures and a
second death are handed to the job."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

from vo_service.jobs.executors import as_finished


class Scripted:
    """An executor whose runs of each item fail or succeed as scripted, in order."""

    def __init__(self, script: dict[str, list[BaseException | None]]) -> None:
        self.script = script
        self.runs: list[str] = []

    def submit(self, fn, item):  # noqa: ANN001, ANN201
        self.runs.append(item)
        future: Future = Future()
        outcome = self.script[item].pop(0)
        if outcome is None:
            future.set_result(fn(item))
        else:
            future.set_exception(outcome)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def test_a_unit_whose_worker_died_runs_once_more() -> None:
    executor = Scripted({
        "died once": [BrokenProcessPool("killed"), None],
        "died twice": [BrokenProcessPool("killed"), BrokenProcessPool("killed again")],
        "bug": [ValueError("a bug"), None],
        "fine": [None],
    })
    finished = {item: future for item, future in as_finished(
        executor, str.upper, list(executor.script), in_flight=2,
        retry_on=(BrokenProcessPool,))}
    assert finished["died once"].result() == "DIED ONCE"
    assert isinstance(finished["died twice"].exception(), BrokenProcessPool)
    assert isinstance(finished["bug"].exception(), ValueError)  # not a dead worker: once
    assert finished["fine"].result() == "FINE"
    assert sorted(executor.runs) == sorted(["died once"] * 2 + ["died twice"] * 2
                                           + ["bug", "fine"])


def test_without_retry_on_a_dead_worker_is_handed_over_at_once() -> None:
    executor = Scripted({"died": [BrokenProcessPool("killed"), None]})
    [(item, future)] = list(as_finished(executor, str.upper, ["died"], in_flight=1))
    assert item == "died" and isinstance(future.exception(), BrokenProcessPool)
    assert executor.runs == ["died"]


def test_the_next_unit_starts_before_a_finished_one_is_handed_over() -> None:
    """While the job handles a finished unit (its rows, results, manifest), the workers
    already have the next: the units in flight never drop below ``in_flight`` for it."""
    executor = Scripted({name: [None] for name in "abcde"})
    submitted_when_handed = []
    for _item, _future in as_finished(executor, str.upper, list("abcde"), in_flight=2):
        submitted_when_handed.append(len(executor.runs))
    assert submitted_when_handed == [3, 4, 5, 5, 5]  # a, b in flight; c goes in as a ends
