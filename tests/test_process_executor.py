"""Catalog jobs on worker processes of this machine (``executor = "processes"``): the same
manifest, stamps and results as the server's threads, and a job whose worker is killed
mid-job has its units run again on a new pool (a unit lost twice is marked), while the next
job runs normally."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from server import serve_archive
from test_batch_job import UWS, create, demo_catalog, wait_final
from test_dask_executor import (
    abort_drops_the_remaining_units,
    finished_job,
    job_data,
    manifest_table,
)
from uws_client import wait_for_results

from vo_service.config import Settings, load_settings
from vo_service.jobs import batch, remote


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=120) as client:
        yield client


def worker_pids() -> set[int]:
    """The catalog-job worker processes this test process started: the children of its
    forkserver (other children, such as a browser's, have their own)."""
    def parent_of(pid: str) -> int | None:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                return int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None

    def is_forkserver(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return b"multiprocessing.forkserver" in handle.read()
        except OSError:
            return False

    parents = {int(pid): parent_of(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    forkservers = {pid for pid, parent in parents.items()
                   if parent == os.getpid() and is_forkserver(pid)}
    return {pid for pid, parent in parents.items() if parent in forkservers}


@pytest.mark.slow
def test_worker_processes_give_the_same_job_as_threads(
    http, demo_archive: Path, tmp_path: Path
) -> None:
    catalog = demo_catalog(demo_archive, 120)
    local_rows, local_stamps, local_ids = finished_job(http, demo_archive, tmp_path / "local",
                                                       catalog, executor="local")
    rows, stamps, ids = finished_job(http, demo_archive, tmp_path / "processes", catalog,
                                     executor="processes", worker_processes=2)
    assert rows == local_rows
    assert ids == local_ids
    assert stamps == local_stamps and local_stamps
    assert "photometry" in ids and any("catalogs/" in name for name in stamps)


@pytest.mark.slow
def test_a_unit_whose_worker_is_killed_runs_again_and_twice_is_reported(
    http, demo_archive: Path, tmp_path: Path, monkeypatch
) -> None:
    """A worker killed mid-unit breaks the pool; the units it held run again on a new pool
    and the job completes whole. A unit whose worker dies a second time ends as error rows
    saying so, and the next job runs normally."""
    monkeypatch.setattr(batch, "CHUNK_TARGETS", 8)
    monkeypatch.setattr(remote, "TASK_DELAY_SECONDS", 0.4)
    catalog = demo_catalog(demo_archive, 120)
    with serve_archive(demo_archive, tmp_path, executor="processes",
                       worker_processes=2) as server:
        url = str(create(http, server, job_data(RESPONSEFORMAT="fits"), catalog).url)
        wait_for_results(http, url, 2)
        victims = worker_pids()
        assert victims
        os.kill(min(victims), signal.SIGKILL)  # mid-unit: each unit sleeps before cutting
        root = wait_final(http, url)
        assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        table = manifest_table(http, root)
        assert len({str(t) for t in table["target_id"]}) == 120 + 8 + 4
        assert not any("worker process" in str(m) for m in table["message"])
        assert min(victims) not in worker_pids()

        url = str(create(http, server, job_data(RESPONSEFORMAT="fits"), catalog).url)
        wait_for_results(http, url, 2)
        killed: set[int] = set()
        deadline = time.monotonic() + 4  # kill every worker as it comes: retries die too
        while time.monotonic() < deadline:
            for pid in worker_pids() - killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.05)
        root = wait_final(http, url)
        assert root.findtext("uws:phase", namespaces=UWS) in ("COMPLETED", "ERROR")
        progress = root.find("uws:jobInfo/*", UWS)
        assert progress.get("done") == progress.get("total")
        table = manifest_table(http, root)
        lost = [str(m) for m in table["message"] if "worker process" in str(m)]
        assert lost and all("stopped twice" in m and "run the job again" in m for m in lost)

        monkeypatch.setattr(remote, "TASK_DELAY_SECONDS", 0.0)
        again = wait_final(http, str(create(http, server, job_data(RESPONSEFORMAT="fits"),
                                             catalog).url))
        assert again.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        table = manifest_table(http, again)
        assert not any("worker process" in str(m) for m in table["message"])


def test_abort_on_worker_processes_drops_the_remaining_units(
    http, demo_archive: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(batch, "CHUNK_TARGETS", 4)
    monkeypatch.setattr(remote, "TASK_DELAY_SECONDS", 0.3)
    with serve_archive(demo_archive, tmp_path, executor="processes",
                       worker_processes=2) as server:
        abort_drops_the_remaining_units(http, server, demo_archive)


def test_the_executor_is_chosen_in_the_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={"VO_SERVICE_EXECUTOR": "processes",
                                      "VO_SERVICE_WORKER_PROCESSES": "3"})
    assert (settings.executor, settings.worker_processes) == ("processes", 3)
    assert remote.BatchExecutors(settings).processes().max_workers == 3
    with pytest.raises(ValueError, match="worker_processes"):
        load_settings(environ={"VO_SERVICE_WORKER_PROCESSES": "-1"})
    with pytest.raises(ValueError, match="'processes'"):
        load_settings(environ={"VO_SERVICE_EXECUTOR": "threads"})
    assert remote.BatchExecutors(Settings(executor="processes")).processes().max_workers \
        == os.cpu_count()


def test_targets_and_outcomes_come_back_from_a_worker_process_unchanged() -> None:
    """A unit's targets go to a worker process and its outcomes come back pickled (in a
    compact form): every field survives, the mutable ones as copies."""
    import pickle

    from vo_service.engine.cutout import StampStatus
    from vo_service.jobs.batch_cut import Outcome, Target

    target = Target(41, "NGC 1365/α", 53.4015, -36.1404, 12.5, "arcsec")
    outcome = Outcome(target, StampStatus.PARTIAL, "cut short at the image's edge",
                      ((0, 40), (17, 57)), {"fits": ("VIS/r000042_NGC_1365__img.fits", 23040)},
                      from_cache=True)
    back = pickle.loads(pickle.dumps([target, outcome]))
    assert back == [target, outcome]
    assert type(back[0]) is Target and back[1].status is StampStatus.PARTIAL
    back[1].files["png"] = ("x.png", 1)
    assert "png" not in outcome.files
