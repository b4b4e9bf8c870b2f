"""Catalog jobs on a real Dask cluster (two worker processes): the same manifest and stamp
bytes as the local pool, ABORT, and a job that survives a worker killed mid-batch."""

from __future__ import annotations

import os
import signal
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from server import assert_valid_votable, serve_archive
from test_batch_job import UWS, create, demo_catalog, job_document, results_of, wait_final
from uws_client import job_results, wait_for_results

from vo_service.jobs import batch, remote

BANDS = ["VIS", "NIR-Y"]
# Columns that name the job (its URL) rather than what was cut.
JOB_COLUMNS = {"access_url", "preview_url"}


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as local_cluster, \
            Client(local_cluster) as control:
        yield local_cluster, control


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=120) as client:
        yield client


def job_data(**extra: str) -> dict:
    return {"UPLOAD": "cat,param:cat", "BANDNAME": BANDS, "PRODUCTTYPE": "BGSUB",
            "SIZE": "24", "RESPONSEFORMAT": "both", "PHASE": "RUN", **extra}


def manifest_table(http: httpx.Client, root):
    manifest = assert_valid_votable(http.get(results_of(root)["manifest"][0]).content)
    return manifest.get_first_table().to_table()


def comparable(table) -> list[tuple]:
    columns = [name for name in table.colnames if name not in JOB_COLUMNS]
    return sorted(tuple(str(row[name]) for name in columns) for row in table)


def finished_job(http: httpx.Client, demo_archive: Path, state_dir: Path, catalog: bytes,
                 **changes: object) -> tuple[list[tuple], dict[str, bytes], set[str]]:
    """Run the whole product matrix (image stamps, PSF products, catalog rows, photometry)
    as one catalog job on a server with ``changes``: its manifest rows, the stamps of its
    bundle by name (a few checked as served) and its result ids."""
    with serve_archive(demo_archive, state_dir, **changes) as server:
        response = create(http, server, job_data(
            PRODUCTTYPE=["BGSUB", "RMS", "FLAG", "CATALOG-PSF", "CATALOG"],
            PHOTOMETRY="true"), catalog)
        assert response.status_code == 200, response.text
        root = wait_final(http, str(response.url))
        assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        progress = root.find("uws:jobInfo/*", UWS)
        assert progress.get("done") == progress.get("total") != "0"
        table = manifest_table(http, root)
        results = job_results(http, root)  # the stamps: reached from the manifest
        # every stamp of the job's bundle, and a few of them as served
        job_dir = server.settings.jobs_dir / str(response.url).rsplit("/", 1)[1]
        with zipfile.ZipFile(job_dir / "bundle.zip") as bundle:
            assert bundle.testzip() is None
            stamps = {name: bundle.read(name) for name in bundle.namelist()
                      if name.endswith((".fits", ".png"))}
        served = sorted(k for k in results
                        if k not in ("manifest", "bundle", "coverage", "photometry"))[::40]
        for result_id in served:
            content = http.get(results[result_id][0]).content
            assert content == stamps[result_id.replace("_", "/", 1)]
        return comparable(table), stamps, set(results)


@pytest.mark.slow
def test_dask_gives_the_same_job_as_the_local_pool(
    cluster, http, demo_archive: Path, tmp_path: Path
) -> None:
    local_cluster, _ = cluster
    catalog = demo_catalog(demo_archive, 120)
    local_rows, local_stamps, local_ids = finished_job(http, demo_archive, tmp_path / "local",
                                                       catalog, executor="local")
    dask_rows, dask_stamps, dask_ids = finished_job(
        http, demo_archive, tmp_path / "dask", catalog, executor="dask",
        scheduler=local_cluster.scheduler_address)
    assert dask_rows == local_rows
    assert dask_ids == local_ids
    assert dask_stamps == local_stamps and local_stamps
    assert "photometry" in dask_ids and any("catalogs/" in name for name in dask_stamps)


def test_abort_on_dask_cancels_the_remaining_batches(
    cluster, http, demo_archive: Path, tmp_path: Path, monkeypatch
) -> None:
    local_cluster, _ = cluster
    monkeypatch.setattr(batch, "CHUNK_TARGETS", 4)
    monkeypatch.setattr(remote, "TASK_DELAY_SECONDS", 0.3)
    with serve_archive(demo_archive, tmp_path, executor="dask",
                       scheduler=local_cluster.scheduler_address) as server:
        abort_drops_the_remaining_units(http, server, demo_archive)


def abort_drops_the_remaining_units(http, server, demo_archive: Path) -> None:  # noqa: ANN001
    """ABORT a 200-target job of small units once it has results: it is ABORTED at once,
    its bundle comes (the final manifest with it), and only part of its work was done."""
    response = create(http, server, job_data(RESPONSEFORMAT="fits"),
                      demo_catalog(demo_archive, 200))
    url = str(response.url)
    wait_for_results(http, url, 3)
    http.post(f"{url}/phase", data={"PHASE": "ABORT"})
    assert job_document(http, url).findtext("uws:phase", namespaces=UWS) == "ABORTED"
    for _ in range(400):
        results = results_of(job_document(http, url))
        if "bundle" in results:  # the manifest (listed while running) is final by then
            break
        time.sleep(0.05)
    assert "bundle" in results
    progress = job_document(http, url).find("uws:jobInfo/*", UWS)
    assert 0 < int(progress.get("done")) < int(progress.get("total"))


@pytest.mark.slow
def test_a_worker_killed_mid_job_has_its_batch_retried(
    cluster, http, demo_archive: Path, tmp_path: Path, monkeypatch
) -> None:
    local_cluster, control = cluster
    monkeypatch.setattr(batch, "CHUNK_TARGETS", 8)
    monkeypatch.setattr(remote, "TASK_DELAY_SECONDS", 0.4)
    with serve_archive(demo_archive, tmp_path, executor="dask",
                       scheduler=local_cluster.scheduler_address) as server:
        response = create(http, server, job_data(RESPONSEFORMAT="fits"),
                          demo_catalog(demo_archive, 120))
        url = str(response.url)
        wait_for_results(http, url, 2)
        pids = control.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)  # mid-batch: each batch sleeps before cutting
        root = wait_final(http, url)
        assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        progress = root.find("uws:jobInfo/*", UWS)
        assert progress.get("done") == progress.get("total")
        table = manifest_table(http, root)
        assert len({str(t) for t in table["target_id"]}) == 120 + 8 + 4
        ids = [r.get("id") for r in root.iterfind("uws:results/uws:result", UWS)]
        assert len(ids) == len(set(ids))
    assert victim not in control.run(os.getpid).values()


@pytest.mark.slow
def test_a_server_restart_resumes_a_dask_job(
    cluster, http, demo_archive: Path, tmp_path: Path, monkeypatch
) -> None:
    local_cluster, _ = cluster
    monkeypatch.setattr(batch, "CHUNK_TARGETS", 4)
    monkeypatch.setattr(remote, "TASK_DELAY_SECONDS", 0.2)
    settings = {"executor": "dask", "scheduler": local_cluster.scheduler_address}
    with serve_archive(demo_archive, tmp_path, **settings) as server:
        response = create(http, server, job_data(RESPONSEFORMAT="fits"),
                          demo_catalog(demo_archive, 60))
        url, old_base = str(response.url), server.base_url
        wait_for_results(http, url, 3)
        assert job_document(http, url).findtext("uws:phase", namespaces=UWS) == "EXECUTING"
    monkeypatch.setattr(remote, "TASK_DELAY_SECONDS", 0.0)
    with serve_archive(demo_archive, tmp_path, **settings) as server:
        root = wait_final(http, url.replace(old_base, server.base_url))
        assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        progress = root.find("uws:jobInfo/*", UWS)
        assert progress.get("done") == progress.get("total")
        table = manifest_table(http, root)
        assert len({str(t) for t in table["target_id"]}) == 60 + 8 + 4


def test_command_line_options(tmp_path: Path, capsys) -> None:
    from vo_service.cli import build_parser, main

    assert main(["serve", "--executor", "dask", "--state-dir", str(tmp_path)]) == 2
    assert "--scheduler" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--executor", "dask", "--scheduler",
                                      "tcp://10.0.0.5:8786"])
    assert (args.executor, args.scheduler) == ("dask", "tcp://10.0.0.5:8786")
    args = build_parser().parse_args(["worker", "tcp://10.0.0.5:8786", "--nworkers", "2"])
    assert (args.scheduler, args.nworkers, args.nthreads) == ("tcp://10.0.0.5:8786", "2", 1)


def test_dask_workers_keep_the_operators_cache_margin(tmp_path: Path) -> None:
    """A worker's cache leaves the free space the operator asked for, as the server's does
    (it used to keep the default margin whatever the settings said)."""
    from dataclasses import replace

    from vo_service.config import Limits, Settings

    margin = 123 * 1024**2
    settings = Settings(state_dir=tmp_path, executor="dask", scheduler="tcp://127.0.0.1:1",
                        limits=replace(Limits(), cache_min_free_bytes=margin))
    executors = remote.BatchExecutors(settings)
    executors._dask = type("Cluster", (), {"max_workers": 2})()  # no cluster needed to plan
    with executors.for_job(2, "margin", None, None, ("fits",), tmp_path / "stamps") as (
            _, unit_function, _):
        place = unit_function.args[0]
    cache, _ = remote._open_handles(place.cache_dir, place.cache_bytes,
                                    place.cache_min_free_bytes, place.jobs_dir)
    assert cache.min_free_bytes == margin
