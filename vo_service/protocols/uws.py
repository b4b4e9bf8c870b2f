"""UWS 1.1 over HTTP: the SODA {async} job list and everything under each job.

``routes()`` is mounted by app.py at ``/async``; the ``JobService`` (see
``create_job_service``) lives on ``app.state.job_service`` and its ``start()``/``stop()``
run in the application's lifespan. Every state change answers 303 (UWS 1.1 §2.2.3);
errors are DALI error documents (404 unknown job, 400 bad value, 403 wrong phase).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from vo_service.config import Settings
from vo_service.jobs import documents
from vo_service.jobs.job_files import iter_result
from vo_service.jobs.phases import Phase, parse_phase
from vo_service.jobs.service import JobParameterError, JobService, OwnerLimitError
from vo_service.jobs.store import JobRecord, Parameter, format_time, parse_time
from vo_service.products.parameters import shorten
from vo_service.protocols.auth import request_owner
from vo_service.protocols.dali import (
    DALIError,
    NotFound,
    Params,
    UsageError,
    error_votable,
    parse_int,
    read_params,
    votable_bytes,
)
from vo_service.protocols.soda import refuse_tap

XML = "application/xml"
TEXT = "text/plain; charset=utf-8"
# Parameters that steer the job itself and are never stored as job parameters.
CONTROL_PARAMETERS = {"PHASE", "RUNID"}
SODA_ASYNC_ID = "ivo://ivoa.net/std/SODA#async-1.0"


def create_job_service(settings: Settings, index: Any, cache: Any = None) -> JobService:
    """The job service with the SODA and catalog (UPLOAD) job kinds.

    Wire it in app.py::

        app.state.job_service = create_job_service(settings, index, cache)
        # lifespan: await app.state.job_service.start() ... await app.state.job_service.stop()
        Mount("/async", routes=uws.routes())
    """
    from vo_service.jobs.kinds import choose_kind, job_kinds, make_resources

    resources = make_resources(settings, index, cache)
    return JobService(settings, job_kinds(resources), choose_kind, resources=resources)


def routes() -> list[BaseRoute]:
    """The UWS resources, relative to the job list's mount point."""
    return [
        Route("/", job_list, methods=["GET", "POST"], name="uws_jobs"),
        Route("/{job_id}", job_resource, methods=["GET", "POST", "DELETE"], name="uws_job"),
        Route("/{job_id}/phase", phase_resource, methods=["GET", "POST"]),
        Route("/{job_id}/executionduration", duration_resource, methods=["GET", "POST"]),
        Route("/{job_id}/destruction", destruction_resource, methods=["GET", "POST"]),
        Route("/{job_id}/quote", quote_resource, methods=["GET"]),
        Route("/{job_id}/owner", owner_resource, methods=["GET"]),
        Route("/{job_id}/error", error_resource, methods=["GET"]),
        Route("/{job_id}/results", results_resource, methods=["GET"]),
        Route("/{job_id}/results/{result_id}", result_file, methods=["GET"]),
        Route("/{job_id}/parameters", parameters_resource, methods=["GET", "POST"]),
    ]


# -- helpers --------------------------------------------------------------------------


def _service(request: Request) -> JobService:
    return request.app.state.job_service


def _list_path(request: Request) -> str:
    """Where the job list of this request lives: ``/async`` (SODA and catalog jobs) or, for
    requests routed by the TAP service, ``/tap/async`` (scope key ``uws_path``)."""
    return request.scope.get("uws_path", "/async")


def _kind(request: Request) -> str | None:
    """The job kind the job list makes (``tap`` under /tap/async; None: from parameters)."""
    return request.scope.get("uws_kind")


def _list_url(request: Request) -> str:
    """Absolute URL of the job list: the configured public base, else the request's."""
    settings: Settings | None = getattr(request.app.state, "settings", None)
    if settings is not None and settings.base_url:
        return settings.base_url.rstrip("/") + _list_path(request)
    return str(request.base_url).rstrip("/") + _list_path(request)


def _job(request: Request) -> JobRecord:
    """The job of the URL if the caller owns it; another owner's job is 404 like a missing
    one, so that job IDs reveal nothing (UWS 1.1 allows 403; 404 tells less)."""
    job_id = request.path_params["job_id"]
    job = _service(request).store.get(job_id)
    if job is None or job.owner_id != request_owner(request) or not _listed_here(request, job):
        raise NotFound(f"there is no job {job_id!r} (it may have been deleted or expired)")
    return job


def _listed_here(request: Request, job: JobRecord) -> bool:
    """TAP jobs live under /tap/async, the others under /async."""
    return (job.kind == "tap") == (_kind(request) == "tap")


def _job_url(request: Request, job_id: str) -> str:
    return f"{_list_url(request)}/{job_id}"


def _see_job(request: Request, job_id: str) -> RedirectResponse:
    return RedirectResponse(_job_url(request, job_id), status_code=303)


def _text(value: object | None) -> Response:
    return Response("" if value is None else f"{value}", media_type=TEXT)


def _xml(content: bytes) -> Response:
    return Response(content, media_type=XML)


async def _job_document(request: Request, job: JobRecord) -> Response:
    store = _service(request).store
    job_url = _job_url(request, job.job_id)

    def build() -> bytes:  # a catalog job may list tens of thousands of results
        return documents.job_document(job, store.parameters(job.job_id),
                                      store.results(job.job_id), job_url)

    return _xml(await run_in_threadpool(build))


def _phase_action(service: JobService, job_id: str, value: str) -> None:
    action = value.strip().upper()
    if action == "RUN":
        try:
            service.run(job_id)  # an incomplete PENDING job: 400, it stays PENDING
        except JobParameterError as exc:
            raise UsageError(str(exc)) from exc
    elif action == "ABORT":
        service.abort(job_id)
    else:
        raise UsageError(f"PHASE must be RUN or ABORT, got {value!r}")


def _job_parameters(params: Params) -> list[Parameter]:
    return [Parameter(name, value) for name, value in params.pairs
            if name not in CONTROL_PARAMETERS]


def _utc_time(name: str, text: str) -> datetime:
    """A time parameter (ISO 8601; ``Z``, an offset or none = UTC) in UTC, or a UsageError."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise UsageError(f"{name}: {shorten(text)!r} is not an ISO 8601 time; use e.g. "
                         "2030-01-31T12:00:00Z") from exc
    except OverflowError as exc:  # year 1 or 9999 moved past the calendar by its offset
        raise UsageError(f"{name}: {shorten(text)!r} falls outside the years 0001-9999 in "
                         "UTC; give a time within them (in UTC: end it with Z)") from exc


# -- the job list -----------------------------------------------------------------------


async def job_list(request: Request) -> Response:
    """GET: the job list (PHASE, AFTER, LAST filters); POST: create a job (303 to it)."""
    params = await read_params(request)
    service = _service(request)
    if request.method == "POST":
        return await _create(request, params, service)
    try:
        phases = [parse_phase(value) for value in params.get_all("PHASE")]
    except ValueError as exc:
        raise UsageError(f"PHASE: {exc}") from exc
    after = params.get_single("AFTER")
    if after is not None:
        after = format_time(_utc_time("AFTER", after))
    last_text = params.get_single("LAST")
    last = parse_int("LAST", last_text, minimum=1) if last_text is not None else None
    jobs = [job for job in service.store.list(phases=phases, after=after, last=last,
                                              owner_id=request_owner(request))
            if _listed_here(request, job)]
    return _xml(documents.jobs_document(jobs, _list_url(request)))


async def _create(request: Request, params: Params, service: JobService) -> Response:
    if _kind(request) is None:
        refuse_tap(params, _list_url(request).removesuffix(_list_path(request)))
    phase = params.get_single("PHASE")
    if phase is not None and phase.strip().upper() not in ("RUN", "ABORT"):
        raise UsageError(f"PHASE in a creating request may only be RUN, got {phase!r}")
    run_id = params.get_single("RUNID")
    if run_id is not None and len(run_id) > 64:
        raise UsageError("RUNID is limited to 64 characters")
    uploads = {upload.name: (upload.filename, upload.data) for upload in params.files}
    request.scope.setdefault("vo_standard_id", SODA_ASYNC_ID)
    try:
        job = await run_in_threadpool(
            service.create, _job_parameters(params), uploads,
            base_url=_list_url(request), run_id=run_id, owner_id=request_owner(request),
            ready=phase is not None and phase.strip().upper() == "RUN",
            kind=_kind(request),
        )
    except JobParameterError as exc:
        raise UsageError(str(exc)) from exc
    except OwnerLimitError as exc:
        raise DALIError(str(exc), label="UsageError", status=403) from exc
    if phase is not None:
        _phase_action(service, job.job_id, phase)
    return _see_job(request, job.job_id)


# -- one job ----------------------------------------------------------------------------


async def job_resource(request: Request) -> Response:
    """GET the job (blocking with WAIT, optionally PHASE); DELETE or POST ACTION=DELETE."""
    job = _job(request)
    service = _service(request)
    params = await read_params(request)
    if request.method == "DELETE" or request.method == "POST":
        if request.method == "POST":
            action = params.get_single("ACTION")
            if action is None or action.upper() != "DELETE":
                raise UsageError("POST to a job URL only accepts ACTION=DELETE; send job "
                                 "parameters to the job's /parameters")
        await run_in_threadpool(service.delete, job.job_id)  # may remove many files
        return RedirectResponse(_list_url(request), status_code=303)
    wait_text = params.get_single("WAIT")
    if wait_text is not None:
        seconds = parse_int("WAIT", wait_text, minimum=-1)
        phase_text = params.get_single("PHASE")
        try:
            phase = parse_phase(phase_text) if phase_text is not None else None
        except ValueError as exc:
            raise UsageError(f"PHASE: {exc}") from exc
        job = await service.wait(job.job_id, seconds, phase) or job
    return await _job_document(request, job)


async def _posted_value(request: Request, name: str, usage: str) -> str:
    """The one value of ``name`` POSTed to the job's ``/<name lower-cased>`` resource;
    a UsageError that shows ``usage`` when it is missing."""
    value = (await read_params(request)).get_single(name)
    if value is None:
        raise UsageError(f"POST to /{name.lower()} needs {usage}")
    return value


async def phase_resource(request: Request) -> Response:
    """GET the phase as text; POST PHASE=RUN or PHASE=ABORT (303 to the job)."""
    job = _job(request)
    if request.method == "GET":
        return _text(job.phase.value)
    value = await _posted_value(request, "PHASE", "PHASE=RUN or PHASE=ABORT")
    _phase_action(_service(request), job.job_id, value)
    return _see_job(request, job.job_id)


async def duration_resource(request: Request) -> Response:
    """GET the execution duration (s); POST EXECUTIONDURATION (clamped to the maximum)."""
    job = _job(request)
    if request.method == "GET":
        return _text(job.execution_duration)
    value = await _posted_value(request, "EXECUTIONDURATION", "EXECUTIONDURATION=<seconds>")
    seconds = parse_int("EXECUTIONDURATION", value, minimum=0)
    _service(request).set_execution_duration(job.job_id, seconds)
    return _see_job(request, job.job_id)


async def destruction_resource(request: Request) -> Response:
    """GET the destruction time; POST DESTRUCTION (ISO 8601, clamped to the maximum)."""
    job = _job(request)
    if request.method == "GET":
        return _text(job.destruction)
    value = await _posted_value(request, "DESTRUCTION", "DESTRUCTION=<ISO 8601 time>")
    _utc_time("DESTRUCTION", value)  # a UsageError before the service sees it
    _service(request).set_destruction(job.job_id, value)
    return _see_job(request, job.job_id)


async def quote_resource(request: Request) -> Response:
    """GET the quote (expected end time), empty if unknown."""
    return _text(_job(request).quote)


async def owner_resource(request: Request) -> Response:
    """GET the owner, empty for anonymous jobs."""
    return _text(_job(request).owner_id)


async def error_resource(request: Request) -> Response:
    """The DALI error document of a failed job (200); 404 while the job has not failed."""
    job = _job(request)
    if job.phase is not Phase.ERROR:
        raise NotFound(f"job {job.job_id} has not failed (phase {job.phase.value})")
    text = job.error_message or "Error: the job failed"
    standard_id = request.scope.get("vo_standard_id", SODA_ASYNC_ID)
    body = votable_bytes(error_votable(text, standard_id=standard_id))
    return Response(body, media_type="application/x-votable+xml")


async def results_resource(request: Request) -> Response:
    """The ``uws:results`` list."""
    job = _job(request)
    store, job_url = _service(request).store, _job_url(request, job.job_id)
    return _xml(await run_in_threadpool(
        lambda: documents.results_document(store.results(job.job_id), job_url)))


async def result_file(request: Request) -> Response:
    """One result file with its MIME type."""
    job = _job(request)
    result_id = request.path_params["result_id"]
    found = await run_in_threadpool(_service(request).result_file, job.job_id, result_id)
    if found is None:
        raise NotFound(f"job {job.job_id} has no result {result_id!r}")
    result, path = found
    if result.offset is None:
        return FileResponse(path, media_type=result.mime_type, headers={
            "Content-Disposition": f'inline; filename="{Path(result.file).name}"'})
    # a catalog job's stamp: its bytes inside the job's bundle, named like its member
    return StreamingResponse(iter_result(path, result), media_type=result.mime_type, headers={
        "Content-Length": str(result.size),
        "Content-Disposition": f'inline; filename="{result.result_id}"'})


async def parameters_resource(request: Request) -> Response:
    """GET ``uws:parameters``; POST name=value pairs while PENDING (replace those names),
    multipart with the files UPLOAD names (replacing files of the same part name)."""
    job = _job(request)
    service = _service(request)
    if request.method == "GET":
        return _xml(documents.parameters_document(service.store.parameters(job.job_id)))
    if job.phase is not Phase.PENDING:
        raise DALIError(f"job {job.job_id} is {job.phase.value}; parameters can only change "
                        "while it is PENDING", label="UsageError", status=403)
    params = await read_params(request)
    uploads = {upload.name: (upload.filename, upload.data) for upload in params.files}
    changed = _job_parameters(params)
    names = {p.name for p in changed}
    merged = [p for p in service.store.parameters(job.job_id) if p.name not in names] + changed
    try:
        await run_in_threadpool(service.replace_parameters, job.job_id, merged, uploads)
    except JobParameterError as exc:
        raise UsageError(str(exc)) from exc
    return _see_job(request, job.job_id)
