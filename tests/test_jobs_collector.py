"""The collector's pace during catalog jobs: slower while any runs, the default after."""

from __future__ import annotations

import gc
import threading

from vo_service.jobs.collector import YOUNG_THRESHOLD, fewer_collections


def test_jobs_running_at_once_share_one_slower_pace_and_the_last_restores_it() -> None:
    before = gc.get_threshold()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first() -> None:
        with fewer_collections():
            seen["first"] = gc.get_threshold()
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with fewer_collections():
            second_in.set()
            first_out.wait(5)
            seen["after first left"] = gc.get_threshold()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    slower = (max(before[0], YOUNG_THRESHOLD), *before[1:])
    assert seen == {"first": slower, "after first left": slower}
    assert gc.get_threshold() == before


def test_the_pace_comes_back_when_a_job_fails() -> None:
    before = gc.get_threshold()
    try:
        with fewer_collections():
            raise RuntimeError("a job that failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
