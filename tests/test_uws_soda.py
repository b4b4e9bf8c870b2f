"""SODA async jobs through the real server: UWS documents, pyvo, results per combination,
restart recovery."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import requests
from lxml import etree
from server import assert_valid_votable, query_status, serve_archive
from uws_client import UWS, XLINK_HREF, job_document, module_client, module_server
from uws_client import phase_of as phase
from uws_client import wait_final as wait_for

from vo_service.archive.index import ArchiveIndex

FAR_CIRCLE = "10 10 0.001"  # no demo image is near


soda_server = module_server("soda-async-state")
client = module_client(follow_redirects=True)


@pytest.fixture(scope="module")
def image(soda_server):
    index = ArchiveIndex(soda_server.settings.index_path)
    return index.records(band="VIS", product_type="BGSUB")[0]


def centre_circle(record, radius: float = 0.002) -> str:
    return f"{record.s_ra} {record.s_dec} {radius}"


def document(client: httpx.Client, url: str, **query: str) -> etree._Element:
    root = job_document(client, url, **query)
    assert root.get("version") == "1.1"
    return root


def wait_final(client: httpx.Client, url: str) -> etree._Element:
    return wait_for(client, url, read=document)


def test_one_result_per_combination_and_no_overlap_as_text(
    soda_server, client, image
) -> None:
    data = {"ID": image.obs_publisher_did,
            "CIRCLE": [centre_circle(image), centre_circle(image, 0.004), FAR_CIRCLE],
            "PHASE": "RUN"}
    response = client.post(soda_server.url("async"), data=data)
    url = str(response.url)
    assert url.startswith(soda_server.url("async/"))
    root = wait_final(client, url)
    assert phase(root) == "COMPLETED"
    params = [(p.get("id"), p.text) for p in root.iterfind("uws:parameters/uws:parameter", UWS)]
    assert [name for name, _ in params] == ["ID", "CIRCLE", "CIRCLE", "CIRCLE"]
    results = root.findall("uws:results/uws:result", UWS)
    assert [r.get("id") for r in results] == ["cutout-1", "cutout-2", "cutout-3"]
    assert [r.get("mime-type") for r in results] == ["application/fits"] * 2 + ["text/plain"]
    for result, circle in zip(results[:2], data["CIRCLE"][:2], strict=True):
        href = result.get(XLINK_HREF)
        assert href.startswith("http://127.0.0.1:")
        served = client.get(href)
        assert served.headers["content-type"].startswith("application/fits")
        assert int(result.get("size")) == len(served.content)
        sync = client.get(soda_server.url("sync"),
                          params={"ID": image.obs_publisher_did, "CIRCLE": circle})
        assert sync.status_code == 200
        assert served.content == sync.content
    miss = client.get(results[2].get(XLINK_HREF))
    assert miss.headers["content-type"].startswith("text/plain")
    assert miss.text.startswith("UsageError: no overlap")
    progress = root.find("uws:jobInfo/*", UWS)
    assert (progress.get("done"), progress.get("total")) == ("3", "3")


def test_cartesian_product_of_ids_and_bands(soda_server, client, image) -> None:
    index = ArchiveIndex(soda_server.settings.index_path)
    other = index.records(band="VIS", product_type="RMS")[0]
    data = {"ID": [image.obs_publisher_did, other.obs_publisher_did],
            "CIRCLE": centre_circle(image), "TIME": ["0 100000", "10 20"], "PHASE": "RUN"}
    root = wait_final(client, str(client.post(soda_server.url("async"), data=data).url))
    results = root.findall("uws:results/uws:result", UWS)
    assert len(results) == 4
    assert phase(root) in ("COMPLETED", "ERROR")


def test_nothing_overlapping_is_an_error(soda_server, client, image) -> None:
    data = {"ID": image.obs_publisher_did, "CIRCLE": FAR_CIRCLE, "PHASE": "RUN"}
    url = str(client.post(soda_server.url("async"), data=data).url)
    root = wait_final(client, url)
    assert phase(root) == "ERROR"
    summary = root.find("uws:errorSummary", UWS)
    assert summary.findtext("uws:message", namespaces=UWS).startswith("UsageError: no overlap")
    error = client.get(f"{url}/error")
    assert error.status_code == 200 and b'value="ERROR"' in error.content
    assert len(root.findall("uws:results/uws:result", UWS)) == 1


def test_bad_parameters_refused_at_creation(soda_server, client, image) -> None:
    bad = [({"ID": image.obs_publisher_did, "CIRCLE": "10 20"}, 400),
           ({"ID": image.obs_publisher_did, "CIRCLE": "10 20 0.1", "BAND": "7 3"}, 400),
           ({"ID": image.obs_publisher_did, "POL": "Z"}, 400),
           ({"CIRCLE": "10 20 0.1", "PHASE": "RUN"}, 400),  # RUN of an incomplete job
           ({"ID": "ivo://nowhere/nothing", "CIRCLE": "10 20 0.1"}, 404)]
    before = len(document(client, soda_server.url("async")).findall("uws:jobref", UWS))
    for data, status in bad:
        response = client.post(soda_server.url("async"), data=data)
        assert response.status_code == status, (data, response.text)
        assert b'name="QUERY_STATUS" value="ERROR"' in response.content
    after = len(document(client, soda_server.url("async")).findall("uws:jobref", UWS))
    assert after == before


def test_pyvo_runs_waits_and_fetches_results(soda_server, client, image) -> None:
    from pyvo.dal import AsyncTAPJob

    response = client.post(soda_server.url("async"),
                           data={"ID": image.obs_publisher_did, "CIRCLE": centre_circle(image)})
    job = AsyncTAPJob(str(response.url))
    assert job.phase == "PENDING"
    job.run()
    job.wait(timeout=120)
    job.raise_if_error()
    assert job.phase == "COMPLETED"
    (uri,) = job.result_uris
    assert client.get(uri).content.startswith(b"SIMPLE  =")
    assert job._job.endtime is not None and job._job.creationtime is not None
    job.delete()
    assert client.get(str(response.url)).status_code == 404


def error_text(response: httpx.Response) -> str:
    """The text of a UWS error answer (a DALI error VOTable)."""
    votable = assert_valid_votable(response.content)
    return query_status(votable)[1]


def test_a_job_is_built_up_then_run(soda_server, client, image) -> None:
    """UWS 1.1: create with the ID only, add the region with POST …/parameters, RUN."""
    from pyvo.dal import AsyncTAPJob, DALServiceError

    created = requests.post(soda_server.url("async"), data={"ID": image.obs_publisher_did},
                            timeout=60)
    assert created.status_code == 200 and created.history[0].status_code == 303
    job = AsyncTAPJob(created.url)
    assert job.phase == "PENDING"
    # RUN before the job is complete: 400 naming what is missing, the job stays PENDING
    refused = client.post(f"{job.url}/phase", data={"PHASE": "RUN"})
    assert refused.status_code == 400
    assert error_text(refused).startswith("UsageError: the job has no CIRCLE, POLYGON or POS")
    with pytest.raises(DALServiceError) as by_pyvo:
        job.run()
    assert by_pyvo.value.code == 400
    assert job.phase == "PENDING"
    # each value's syntax is checked when it arrives; a refused value is not kept
    bad = requests.post(f"{job.url}/parameters", data={"CIRCLE": "10 20"}, timeout=60)
    assert bad.status_code == 400 and "CIRCLE" in error_text(bad)
    parameters = job.job.parameters
    assert [(p.id_, p.content) for p in parameters] == [("ID", image.obs_publisher_did)]
    added = requests.post(f"{job.url}/parameters", data={"CIRCLE": centre_circle(image)},
                          timeout=60)
    assert added.status_code == 200 and added.url == job.url
    job.run()
    job.wait(timeout=120)
    job.raise_if_error()
    assert job.phase == "COMPLETED"
    (uri,) = job.result_uris
    sync = client.get(soda_server.url("sync"),
                      params={"ID": image.obs_publisher_did, "CIRCLE": centre_circle(image)})
    assert client.get(uri).content == sync.content
    job.delete()


def test_a_job_without_an_id_runs_only_once_it_has_one(soda_server, client, image) -> None:
    url = str(client.post(soda_server.url("async"), data={"CIRCLE": centre_circle(image)}).url)
    assert phase(document(client, url)) == "PENDING"
    refused = client.post(f"{url}/phase", data={"PHASE": "RUN"})
    assert refused.status_code == 400
    assert error_text(refused).startswith("UsageError: a SODA job needs at least one ID")
    assert phase(document(client, url)) == "PENDING"
    unknown = client.post(f"{url}/parameters", data={"ID": "ivo://nowhere/nothing"})
    assert unknown.status_code == 404 and "not in this archive" in error_text(unknown)
    client.post(f"{url}/parameters", data={"ID": image.obs_publisher_did})
    client.post(f"{url}/phase", data={"PHASE": "RUN"})
    assert phase(wait_final(client, url)) == "COMPLETED"
    client.delete(url)


def test_job_list_is_valid_and_filters(soda_server, client, image) -> None:
    created = client.post(soda_server.url("async"),
                          data={"ID": image.obs_publisher_did, "CIRCLE": centre_circle(image)})
    job_id = str(created.url).rsplit("/", 1)[1]
    root = document(client, soda_server.url("async"), PHASE="PENDING")
    ids = [ref.get("id") for ref in root.findall("uws:jobref", UWS)]
    assert job_id in ids
    assert all(phase(ref) == "PENDING" for ref in root.findall("uws:jobref", UWS))
    (newest,) = document(client, soda_server.url("async"), LAST="1").findall("uws:jobref", UWS)
    assert newest.get("id") == job_id
    assert newest.get(XLINK_HREF) == soda_server.url(f"async/{job_id}")


@pytest.mark.slow
def test_jobs_survive_a_restart_and_interrupted_ones_finish(
    demo_archive: Path, tmp_path: Path, client, image
) -> None:
    with serve_archive(demo_archive, tmp_path) as server:
        data = {"ID": image.obs_publisher_did, "CIRCLE": centre_circle(image)}
        done = str(client.post(server.url("async"), data={**data, "PHASE": "RUN"}).url)
        assert phase(wait_final(client, done)) == "COMPLETED"
        pending = str(client.post(server.url("async"), data=data).url)
        running = str(client.post(server.url("async"), data={**data, "PHASE": "RUN"}).url)
        old_base = server.base_url
    from vo_service.jobs.phases import Phase
    from vo_service.jobs.store import JobStore

    store = JobStore(tmp_path / "jobs")  # as if the process died while it ran
    store.update(running.rsplit("/", 1)[1], phase=Phase.EXECUTING, end_time=None, attempts=1)
    store.close()
    time.sleep(0.01)
    with serve_archive(demo_archive, tmp_path) as server:
        def moved(url: str) -> str:
            return url.replace(old_base, server.base_url)

        assert phase(document(client, moved(done))) == "COMPLETED"
        assert client.get(f"{moved(done)}/results/cutout-1").status_code == 200
        assert phase(document(client, moved(pending))) == "PENDING"
        recovered = wait_final(client, moved(running))
        assert phase(recovered) == "COMPLETED"
        assert recovered.findtext("uws:endTime", namespaces=UWS)
