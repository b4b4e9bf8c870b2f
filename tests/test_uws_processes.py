"""Two job services on one state directory, as ``serve --workers 2`` runs them: the first
to start runs the jobs, the other only stores them; both answer every UWS request.

The services live in one test process, each behind its own server: the runner lock is a
``flock`` on a file, which two opens of it contend for as two processes would, so every
request goes to a known "process".
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from test_uws import UWS_NS, Server, create, job_doc, make_app, wait_final
from uws_client import phase_of

from vo_service.config import Limits, Settings

ENDLESS = {"STEPS": "100000", "STEP_SECONDS": "0.05"}  # runs for hours unless stopped


@pytest.fixture()
def runner_and_other(tmp_path) -> Iterator[tuple[str, str]]:
    """Base URLs of the service that runs the jobs and of the one that does not."""
    # One job slot: a job that is not stopped keeps every later job waiting. WAIT may block
    # for 10 minutes: one that misses a phase change hangs past the client's timeout.
    settings = Settings(state_dir=tmp_path, limits=Limits(wait_cap_seconds=600, job_workers=1))
    runner_app, other_app = make_app(settings), make_app(settings)
    with Server(runner_app) as runner, Server(other_app) as other:
        assert runner_app.state.job_service.is_runner
        assert not other_app.state.job_service.is_runner
        yield runner, other


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, follow_redirects=True) as http:
        yield http


def test_job_created_and_run_elsewhere_runs_in_the_runner(runner_and_other, client) -> None:
    runner, other = runner_and_other
    url = create(client, other, STEPS="3", STEP_SECONDS="0.2")
    assert client.post(f"{url}/phase", data={"PHASE": "RUN"}).status_code == 200
    # the other service only stored the job: it waits for the runner to pick it up
    seen = phase_of(job_doc(client, url, WAIT="20", PHASE="QUEUED"))
    assert seen in ("EXECUTING", "COMPLETED")
    root = wait_final(client, url)
    assert phase_of(root) == "COMPLETED"
    assert [r.get("id") for r in root.iterfind("uws:results/uws:result", UWS_NS)] == [
        "step-0", "step-1", "step-2"]
    at_runner = url.replace(other, runner)
    assert phase_of(job_doc(client, at_runner)) == "COMPLETED"
    listed = {client.get(f"{base}/async").text.replace(base, "") for base in (runner, other)}
    assert len(listed) == 1


def test_abort_through_the_other_service_stops_the_running_job(runner_and_other, client
                                                               ) -> None:
    runner, other = runner_and_other
    endless = create(client, runner, **ENDLESS, PHASE="RUN")
    job_doc(client, endless, WAIT="20", PHASE="QUEUED")  # until it executes
    after = create(client, runner, STEPS="1", PHASE="RUN")
    client.post(f"{endless.replace(runner, other)}/phase", data={"PHASE": "ABORT"})
    assert phase_of(wait_final(client, endless)) == "ABORTED"
    # the job slot is free again only if the endless job really stopped
    assert phase_of(wait_final(client, after)) == "COMPLETED"


def test_delete_through_the_other_service_stops_the_running_job(runner_and_other, client
                                                                ) -> None:
    runner, other = runner_and_other
    endless = create(client, runner, **ENDLESS, PHASE="RUN")
    job_doc(client, endless, WAIT="20", PHASE="QUEUED")
    after = create(client, runner, STEPS="1", PHASE="RUN")
    assert client.delete(endless.replace(runner, other)).status_code == 200
    assert client.get(endless).status_code == 404
    assert phase_of(wait_final(client, after)) == "COMPLETED"


def test_execution_duration_set_elsewhere_applies_to_the_running_job(runner_and_other, client
                                                                     ) -> None:
    runner, other = runner_and_other
    url = create(client, runner, **ENDLESS, PHASE="RUN")
    job_doc(client, url, WAIT="20", PHASE="QUEUED")
    client.post(f"{url.replace(runner, other)}/executionduration",
                data={"EXECUTIONDURATION": "1"})
    root = wait_final(client, url)
    assert phase_of(root) == "ABORTED"
    assert "execution duration of 1 s" in root.findtext("uws:errorSummary/uws:message",
                                                        namespaces=UWS_NS)


def test_wait_in_the_other_service_returns_when_the_runner_changes_the_phase(
    runner_and_other, client
) -> None:
    runner, other = runner_and_other
    url = create(client, runner, STEPS="2", STEP_SECONDS="0.5", PHASE="RUN")
    job_doc(client, url, WAIT="20", PHASE="QUEUED")
    root = job_doc(client, url.replace(runner, other), WAIT="-1", PHASE="EXECUTING")
    assert phase_of(root) == "COMPLETED"


def test_the_other_service_takes_over_when_the_runner_stops(tmp_path, client) -> None:
    settings = Settings(state_dir=tmp_path, limits=Limits(wait_cap_seconds=600))
    runner_app, other_app = make_app(settings), make_app(settings)
    runner_server = Server(runner_app)
    runner_server.__enter__()
    with Server(other_app) as other:
        assert not other_app.state.job_service.is_runner
        runner_server.__exit__(None, None, None)  # the runner lets go of its lock
        url = create(client, other, STEPS="2", PHASE="RUN")
        assert phase_of(wait_final(client, url)) == "COMPLETED"
        assert other_app.state.job_service.is_runner
