"""The UWS 1.1 state machine through a real server on loopback, with a trivial job kind."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest
import uvicorn
from lxml import etree
from starlette.applications import Starlette
from starlette.routing import Mount
from uws_client import phase_of
from uws_client import wait_final as wait_for

from vo_service.config import Limits, Settings
from vo_service.jobs.phases import Phase
from vo_service.jobs.service import JobContext, JobFailed, JobParameterError, JobService, Upload
from vo_service.jobs.store import JobStore, Parameter, ResultFile
from vo_service.protocols import uws
from vo_service.protocols.dali import DALIError, dali_exception_handler

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "standards" / "schemas"
UWS_NS = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink"}


def uws_schema() -> etree.XMLSchema:
    """UWS.xsd with its xlink import pointed at the local copy."""
    text = (SCHEMAS / "UWS.xsd").read_text()
    text = text.replace("http://www.ivoa.net/xml/Xlink/xlink.xsd", str(SCHEMAS / "xlink.xsd"))
    return etree.XMLSchema(etree.fromstring(text.encode(), base_url=str(SCHEMAS) + "/"))


SCHEMA = uws_schema()


def valid_document(body: bytes) -> etree._Element:
    """Parse a UWS document and assert it validates against UWS.xsd."""
    root = etree.fromstring(body)
    assert SCHEMA.validate(root), SCHEMA.error_log
    if etree.QName(root).localname in ("job", "jobs"):
        assert root.get("version") == "1.1"
    return root


class StepJob:
    """Test kind: STEPS steps of STEP_SECONDS each, one text result per step; FAIL=yes fails;
    FINISH_STEP=yes goes on after an abort."""

    name = "steps"

    def validate(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]) -> None:
        for p in parameters:
            if p.name in ("STEPS", "STEP_SECONDS"):
                try:
                    float(p.value)
                except ValueError:
                    raise JobParameterError(f"{p.name} must be a number, got {p.value!r}") from None
        return None

    def check_ready(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
                    ) -> None:
        if any(p.name == "INCOMPLETE" for p in parameters):
            raise JobParameterError("the job lacks what INCOMPLETE says")

    def run(self, context: JobContext) -> None:
        values = {p.name: p.value for p in context.parameters}
        steps = int(values.get("STEPS", "2"))
        pause = float(values.get("STEP_SECONDS", "0.05"))
        if values.get("FAIL") == "yes":
            raise JobFailed("UsageError: no overlap for any combination")
        for step in range(steps):
            if context.should_stop() and values.get("FINISH_STEP") != "yes":
                return  # FINISH_STEP: end the step under way, as a catalog job's unit does
            time.sleep(pause)
            path = context.job_dir / f"step-{step}.txt"
            path.write_text(f"step {step}\n")
            context.add_results([ResultFile(f"step-{step}", path.name, "text/plain",
                                            path.stat().st_size)])
            context.set_progress(step + 1, steps)


class Server:
    """uvicorn serving an app on a free loopback port, in a thread."""

    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def make_app(settings: Settings) -> Starlette:
    service = JobService(settings, {"steps": StepJob()}, lambda params: "steps")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Iterator[None]:
        await service.start()
        yield
        await service.stop()

    app = Starlette(routes=[Mount("/async", routes=uws.routes())], lifespan=lifespan,
                    exception_handlers={DALIError: dali_exception_handler})
    app.state.settings = settings
    app.state.job_service = service
    return app


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path, limits=Limits(wait_cap_seconds=20, job_workers=2))


@pytest.fixture()
def base(settings: Settings) -> Iterator[str]:
    with Server(make_app(settings)) as url:
        yield url


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, follow_redirects=True) as http:
        yield http


def create(client: httpx.Client, base: str, **params: str) -> str:
    """Create a job; return its URL (from the 303)."""
    response = client.post(f"{base}/async", data=params, follow_redirects=False)
    if response.status_code in (307, 308):  # a mount may redirect /async to /async/
        response = client.post(response.headers["location"], data=params,
                               follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"]


def job_doc(client: httpx.Client, url: str, **query: str) -> etree._Element:
    response = client.get(url, params=query)
    assert response.status_code == 200
    return valid_document(response.content)


def wait_final(client: httpx.Client, url: str) -> etree._Element:
    return wait_for(client, url, read=job_doc, wait="-1", attempts=50)


def test_create_pending_job_document(client: httpx.Client, base: str) -> None:
    url = create(client, base, STEPS="2", CIRCLE="10 20 0.1", RUNID="my-run")
    assert url.startswith(f"{base}/async/")
    root = job_doc(client, url)
    assert phase_of(root) == "PENDING"
    assert root.findtext("uws:runId", namespaces=UWS_NS) == "my-run"
    owner = root.find("uws:ownerId", UWS_NS)
    assert owner.get("{http://www.w3.org/2001/XMLSchema-instance}nil") == "true"
    assert root.findtext("uws:creationTime", namespaces=UWS_NS).endswith("Z")
    params = {p.get("id"): p.text for p in root.iterfind("uws:parameters/uws:parameter", UWS_NS)}
    assert params == {"STEPS": "2", "CIRCLE": "10 20 0.1"}
    assert client.get(f"{url}/phase").text == "PENDING"
    assert int(client.get(f"{url}/executionduration").text) > 0
    assert client.get(f"{url}/destruction").text.endswith("Z")
    assert client.get(f"{url}/owner").text == ""
    assert client.get(f"{url}/error").status_code == 404
    valid_document(client.get(f"{url}/parameters").content)


def test_run_in_creating_post_is_an_action_not_a_parameter(
    client: httpx.Client, base: str
) -> None:
    url = create(client, base, STEPS="3", PHASE="RUN")
    root = wait_final(client, url)
    assert phase_of(root) == "COMPLETED"
    names = [p.get("id") for p in root.iterfind("uws:parameters/uws:parameter", UWS_NS)]
    assert names == ["STEPS"]
    assert root.findtext("uws:startTime", namespaces=UWS_NS).endswith("Z")
    assert root.findtext("uws:endTime", namespaces=UWS_NS).endswith("Z")
    results = root.findall("uws:results/uws:result", UWS_NS)
    assert [r.get("id") for r in results] == ["step-0", "step-1", "step-2"]
    href = results[0].get("{http://www.w3.org/1999/xlink}href")
    assert href.startswith("http://127.0.0.1:") and href.endswith("/results/step-0")
    assert results[0].get("mime-type") == "text/plain"
    fetched = client.get(href)
    assert fetched.status_code == 200 and fetched.text == "step 0\n"
    progress = root.find("uws:jobInfo/*", UWS_NS)
    assert (progress.get("done"), progress.get("total")) == ("3", "3")
    valid_document(client.get(f"{url}/results").content)


def test_wait_returns_when_the_phase_changes(client: httpx.Client, base: str) -> None:
    url = create(client, base, STEPS="4", STEP_SECONDS="0.3")
    assert client.post(f"{url}/phase", data={"PHASE": "RUN"}).status_code == 200
    seen = phase_of(job_doc(client, url))
    assert seen in ("QUEUED", "EXECUTING", "COMPLETED")
    # WAIT with a PHASE the job is not in answers at once
    assert phase_of(job_doc(client, url, WAIT="15", PHASE="PENDING")) != "PENDING"
    # a blocking WAIT on an active job comes back with a different phase
    root = job_doc(client, url, WAIT="15")
    assert phase_of(root) != seen or seen == "COMPLETED"
    assert phase_of(wait_final(client, url)) == "COMPLETED"
    # WAIT on a finished job answers at once
    assert phase_of(job_doc(client, url, WAIT="15")) == "COMPLETED"


def test_abort_keeps_finished_results_and_harmless_repeats(
    client: httpx.Client, base: str
) -> None:
    url = create(client, base, STEPS="200", STEP_SECONDS="0.05", PHASE="RUN")
    for _ in range(100):
        root = job_doc(client, url)
        if len(root.findall("uws:results/uws:result", UWS_NS)) >= 2:
            break
        time.sleep(0.05)
    # RUN on a running job is harmless
    response = client.post(f"{url}/phase", data={"PHASE": "RUN"}, follow_redirects=False)
    assert response.status_code == 303
    response = client.post(f"{url}/phase", data={"PHASE": "ABORT"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == url
    root = job_doc(client, url)
    assert phase_of(root) == "ABORTED"
    assert root.findtext("uws:endTime", namespaces=UWS_NS)
    time.sleep(0.3)  # the worker notices the abort at its next step
    kept = len(job_doc(client, url).findall("uws:results/uws:result", UWS_NS))
    assert 2 <= kept < 200
    time.sleep(0.3)
    assert len(job_doc(client, url).findall("uws:results/uws:result", UWS_NS)) == kept
    # ABORT on a finished job is harmless
    response = client.post(f"{url}/phase", data={"PHASE": "ABORT"}, follow_redirects=False)
    assert response.status_code == 303
    assert phase_of(job_doc(client, url)) == "ABORTED"
    assert client.post(f"{url}/phase", data={"PHASE": "SUSPEND"}).status_code == 400


def test_failed_job_has_error_summary_and_error_document(
    client: httpx.Client, base: str
) -> None:
    url = create(client, base, FAIL="yes", PHASE="RUN")
    root = wait_final(client, url)
    assert phase_of(root) == "ERROR"
    summary = root.find("uws:errorSummary", UWS_NS)
    assert summary.get("type") == "fatal" and summary.get("hasDetail") == "true"
    assert summary.findtext("uws:message", namespaces=UWS_NS).startswith("UsageError:")
    assert root.findtext("uws:endTime", namespaces=UWS_NS)
    error = client.get(f"{url}/error")
    assert error.status_code == 200
    assert b'name="QUERY_STATUS" value="ERROR"' in error.content
    assert b"UsageError: no overlap" in error.content


def test_bad_parameters_are_refused_at_creation(client: httpx.Client, base: str) -> None:
    response = client.post(f"{base}/async/", data={"STEPS": "many"}, follow_redirects=False)
    assert response.status_code == 400
    assert b"UsageError: STEPS must be a number" in response.content
    response = client.post(f"{base}/async/", data={"STEPS": "1", "PHASE": "GO"})
    assert response.status_code == 400


def test_delete_then_404(client: httpx.Client, base: str) -> None:
    url = create(client, base, STEPS="1")
    response = client.delete(url, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"{base}/async"
    assert client.get(url).status_code == 404
    assert client.get(f"{url}/phase").status_code == 404
    url = create(client, base, STEPS="1")
    response = client.post(url, data={"ACTION": "DELETE"}, follow_redirects=False)
    assert response.status_code == 303
    assert client.get(url).status_code == 404
    assert client.post(create(client, base, STEPS="1"), data={"STEPS": "3"}).status_code == 400
    assert client.get(f"{base}/async/nosuchjob").status_code == 404


def test_deleting_a_running_job_is_no_failure_in_the_log(client: httpx.Client, base: str,
                                                          caplog) -> None:
    """A job deleted while it writes (its row and folder gone under it) is a deletion, not
    a failure with a traceback."""
    url = create(client, base, STEPS="3", STEP_SECONDS="0.3", FINISH_STEP="yes", PHASE="RUN")
    deadline = time.monotonic() + 10
    while client.get(f"{url}/phase").text != "EXECUTING" and time.monotonic() < deadline:
        time.sleep(0.02)
    with caplog.at_level(logging.INFO, logger="vo_service.jobs.service"):
        assert client.delete(url, follow_redirects=False).status_code == 303
        time.sleep(1.2)  # the job's next steps write progress and results, then it ends
    assert client.get(url).status_code == 404
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "was deleted while it ran" in caplog.text


def test_job_list_filters(client: httpx.Client, base: str) -> None:
    first = create(client, base, STEPS="1")
    time.sleep(0.01)
    second = create(client, base, STEPS="1", PHASE="RUN")
    wait_final(client, second)
    time.sleep(0.01)
    third = create(client, base, STEPS="1")

    def listed(**query: object) -> list[str]:
        response = client.get(f"{base}/async", params=query)
        assert response.status_code == 200
        root = valid_document(response.content)
        refs = root.findall("uws:jobref", UWS_NS)
        for ref in refs:
            assert ref.get("{http://www.w3.org/1999/xlink}href").startswith(f"{base}/async/")
        return [ref.get("id") for ref in refs]

    ids = [u.rsplit("/", 1)[1] for u in (first, second, third)]
    assert listed() == ids
    assert listed(PHASE="PENDING") == [ids[0], ids[2]]
    assert listed(PHASE=["PENDING", "COMPLETED"]) == ids
    assert listed(LAST="2") == [ids[2], ids[1]]
    created = client.get(second).content
    creation = valid_document(created).findtext("uws:creationTime", namespaces=UWS_NS)
    assert listed(AFTER=creation) == [ids[2]]
    assert listed(PHASE="PENDING", LAST="1") == [ids[2]]
    assert client.get(f"{base}/async", params={"LAST": "0"}).status_code == 400
    assert client.get(f"{base}/async", params={"PHASE": "SLEEPING"}).status_code == 400
    assert client.get(f"{base}/async", params={"AFTER": "yesterday"}).status_code == 400


def test_parameters_change_only_while_pending(client: httpx.Client, base: str) -> None:
    url = create(client, base, STEPS="1")
    response = client.post(f"{url}/parameters", data={"STEPS": "2"}, follow_redirects=False)
    assert response.status_code == 303
    root = job_doc(client, url)
    assert root.findtext("uws:parameters/uws:parameter", namespaces=UWS_NS) == "2"
    assert client.post(f"{url}/parameters", data={"STEPS": "x"}).status_code == 400
    client.post(f"{url}/phase", data={"PHASE": "RUN"})
    wait_final(client, url)
    assert client.post(f"{url}/parameters", data={"STEPS": "3"}).status_code == 403


def test_run_of_an_incomplete_job_is_refused_and_it_stays_pending(
        client: httpx.Client, base: str) -> None:
    url = create(client, base, STEPS="1", INCOMPLETE="yes")
    refused = client.post(f"{url}/phase", data={"PHASE": "RUN"}, follow_redirects=False)
    assert refused.status_code == 400 and b"UsageError: the job lacks" in refused.content
    assert client.get(f"{url}/phase").text == "PENDING"
    # RUN in the creating request: refused, and no job is made
    listed = len(job_doc(client, f"{base}/async").findall("uws:jobref", UWS_NS))
    response = client.post(f"{base}/async", data={"INCOMPLETE": "yes", "PHASE": "RUN"})
    assert response.status_code == 400
    assert len(job_doc(client, f"{base}/async").findall("uws:jobref", UWS_NS)) == listed


def test_execution_duration_is_enforced(client: httpx.Client, base: str) -> None:
    url = create(client, base, STEPS="400", STEP_SECONDS="0.05")
    response = client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "1"},
                           follow_redirects=False)
    assert response.status_code == 303
    assert client.get(f"{url}/executionduration").text == "1"
    client.post(f"{url}/phase", data={"PHASE": "RUN"})
    root = wait_final(client, url)
    assert phase_of(root) == "ABORTED"
    message = root.findtext("uws:errorSummary/uws:message", namespaces=UWS_NS)
    assert "execution duration" in message
    assert root.findall("uws:results/uws:result", UWS_NS)


def test_destruction_clamped_and_expired_jobs_removed(
    client: httpx.Client, settings: Settings
) -> None:
    app = make_app(settings)
    with Server(app) as base:
        url = create(client, base, STEPS="1")
        far = "2999-01-01T00:00:00.000000Z"
        assert client.post(f"{url}/destruction", data={"DESTRUCTION": far},
                           follow_redirects=False).status_code == 303
        assert client.get(f"{url}/destruction").text < "2999"
        assert client.post(f"{url}/destruction", data={"DESTRUCTION": "soon"}).status_code == 400
        kept = create(client, base, STEPS="1", PHASE="RUN")
        wait_final(client, kept)
        client.post(f"{url}/destruction", data={"DESTRUCTION": "2001-01-01T00:00:00Z"})
        job_dir = settings.jobs_dir / url.rsplit("/", 1)[1]
        app.state.job_service.sweep()  # the periodic sweep, run now
        assert client.get(url).status_code == 404
        assert not job_dir.exists()
        assert client.get(kept).status_code == 200


def test_restart_recovers_interrupted_jobs(settings: Settings, client: httpx.Client) -> None:
    with Server(make_app(settings)) as base:
        done = create(client, base, STEPS="1", PHASE="RUN")
        assert phase_of(wait_final(client, done)) == "COMPLETED"
        interrupted = create(client, base, STEPS="2")
        doomed = create(client, base, STEPS="2")
    # simulate a process that died while the jobs executed
    store = JobStore(settings.jobs_dir)
    store.update(interrupted.rsplit("/", 1)[1], phase=Phase.EXECUTING, attempts=1)
    store.update(doomed.rsplit("/", 1)[1], phase=Phase.EXECUTING, attempts=2)
    store.close()
    with Server(make_app(settings)) as base:
        again = interrupted.replace(interrupted.split("/async")[0], base)
        assert phase_of(wait_final(client, again)) == "COMPLETED"
        failed = wait_final(client, doomed.replace(doomed.split("/async")[0], base))
        assert phase_of(failed) == "ERROR"
        assert "restarted" in failed.findtext("uws:errorSummary/uws:message",
                                              namespaces=UWS_NS)
        old = done.replace(done.split("/async")[0], base)
        assert phase_of(job_doc(client, old)) == "COMPLETED"
        assert client.get(f"{old}/results/step-0").text == "step 0\n"


def test_pyvo_runs_waits_and_fetches(client: httpx.Client, base: str) -> None:
    from pyvo.dal import AsyncTAPJob

    url = create(client, base, STEPS="2")
    job = AsyncTAPJob(url)
    job.run()
    job.wait(timeout=60)
    job.raise_if_error()
    assert job.phase == "COMPLETED"
    uris = job.result_uris
    assert len(uris) == 2
    assert client.get(uris[1]).text == "step 1\n"
    job.delete()
    assert client.get(url).status_code == 404


def test_full_queue_holds_the_job_until_run_again(tmp_path: Path, client: httpx.Client) -> None:
    settings = Settings(state_dir=tmp_path,
                        limits=Limits(job_workers=1, max_queued_jobs=1, wait_cap_seconds=20))
    with Server(make_app(settings)) as base:
        busy = create(client, base, STEPS="100", STEP_SECONDS="0.05", PHASE="RUN")
        job_doc(client, busy, WAIT="10", PHASE="QUEUED")  # until it executes
        queued = create(client, base, STEPS="1", PHASE="RUN")
        held = create(client, base, STEPS="1", PHASE="RUN")
        assert phase_of(job_doc(client, queued)) == "QUEUED"
        assert phase_of(job_doc(client, held)) == "HELD"
        client.post(f"{busy}/phase", data={"PHASE": "ABORT"})
        assert phase_of(wait_final(client, queued)) == "COMPLETED"
        client.post(f"{held}/phase", data={"PHASE": "RUN"})
        assert phase_of(wait_final(client, held)) == "COMPLETED"


def test_shorter_execution_duration_applies_to_a_running_job(
    client: httpx.Client, base: str
) -> None:
    url = create(client, base, STEPS="400", STEP_SECONDS="0.05", PHASE="RUN")
    job_doc(client, url, WAIT="10", PHASE="QUEUED")
    client.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "1"})
    root = wait_final(client, url)
    assert phase_of(root) == "ABORTED"
    assert "execution duration of 1 s" in root.findtext("uws:errorSummary/uws:message",
                                                        namespaces=UWS_NS)


def test_progress_is_written_now_and_then_and_always_at_the_end(tmp_path: Path) -> None:
    """A catalog job finishes units faster than clients poll: its progress is written at
    most every PROGRESS_SECONDS (each write waits for the job store's lock), and the last
    one, all done, always."""
    from types import SimpleNamespace

    from vo_service.jobs import context as job_context
    from vo_service.jobs.context import JobContext

    written: list[tuple[int, int]] = []
    store = SimpleNamespace(update=lambda job_id, progress_done, progress_total:
                            written.append((progress_done, progress_total)))
    context = JobContext("j", [], {}, tmp_path, "http://x", None,
                         SimpleNamespace(stopping=False, store=store))
    for done in range(1, 101):
        context.set_progress(done, 100)
    assert written[0] == (1, 100) and written[-1] == (100, 100) and len(written) <= 3
    time.sleep(job_context.PROGRESS_SECONDS)
    context.set_progress(5, 200)  # long enough after the last write: written
    assert written[-1] == (5, 200)
