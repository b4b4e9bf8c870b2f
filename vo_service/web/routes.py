"""Small JSON and PNG helpers behind the web page (``/api/...``).

The page itself is ``/`` (``templates/index.html``); jobs are created, aborted and deleted
through the UWS endpoints VO clients use (``/async``). These helpers only describe things
the page needs to show: the archive's choices, an uploaded catalog before submission, the
job list with progress, a finished job's gallery and pictures of its FITS stamps. Errors
are DALI error documents like everywhere else, so the page reads one kind of message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from vo_service.catalogs import CatalogError, describe_catalog
from vo_service.engine.composite import CompositeError
from vo_service.engine.preview import PreviewOptions
from vo_service.jobs.job_files import read_result
from vo_service.jobs.service import JobService
from vo_service.jobs.store import JobRecord, JobStore
from vo_service.protocols.auth import request_owner
from vo_service.protocols.dali import NotFound, UsageError, parse_int, read_params
from vo_service.web import choices, gallery

MAX_JOBS_LISTED = 200
MAX_THUMB_SIZE = 1024
GALLERY_PAGE = 25
# Rendered stamps never change for a given job and result: let the browser keep them.
IMAGE_HEADERS = {"Cache-Control": "private, max-age=3600"}
SUMMARY_PARAMETERS = ("INSTRUMENT", "BANDNAME", "PRODUCTTYPE", "SIZE", "SIZE_UNIT",
                      "RESPONSEFORMAT", "WORKERS")


def routes() -> list[BaseRoute]:
    """The page's helper endpoints, to add to the application's routes."""
    return [
        Route("/api/facets", facets_endpoint, methods=["GET"]),
        Route("/api/catalog", catalog_endpoint, methods=["POST"]),
        Route("/api/images", images_endpoint, methods=["GET"]),
        Route("/api/jobs", jobs_endpoint, methods=["GET"]),
        Route("/api/jobs/{job_id}/gallery", gallery_endpoint, methods=["GET"]),
        Route("/api/jobs/{job_id}/thumb/{result_id}", thumb_endpoint, methods=["GET"]),
        Route("/api/jobs/{job_id}/composite/{row:int}", composite_endpoint, methods=["GET"]),
    ]


def _service(request: Request) -> JobService:
    return request.app.state.job_service


def _store(request: Request) -> JobStore:
    return _service(request).store


def _job(request: Request) -> JobRecord:
    job_id = request.path_params["job_id"]
    job = _store(request).get(job_id)
    if job is None or job.owner_id != request_owner(request):  # as /async: 404, not 403
        raise NotFound(f"there is no job {job_id!r} (it may have been deleted or expired)")
    return job


async def facets_endpoint(request: Request) -> Response:
    """Collections, instruments with their bands and product types, and the job limits."""
    found = await run_in_threadpool(choices.page_choices, request.app.state.index)
    limits = request.app.state.settings.limits
    found["limits"] = {"max_upload_rows": limits.max_upload_rows,
                       "max_upload_bytes": limits.max_upload_bytes,
                       "job_workers": limits.job_workers,
                       "max_job_workers": limits.max_job_workers,
                       "max_cutout_pixels": limits.max_cutout_pixels}
    return JSONResponse(found)


async def catalog_endpoint(request: Request) -> Response:
    """Describe an uploaded catalog: format, row count, columns, preselected columns."""
    params = await read_params(request)
    if not params.files:
        raise UsageError("choose a catalog file (VOTable, FITS table or CSV) to upload")
    upload = params.files[0]
    limits = request.app.state.settings.limits
    try:
        summary = await run_in_threadpool(describe_catalog, upload.data, upload.filename,
                                          max_rows=limits.max_upload_rows,
                                          max_columns=limits.max_upload_columns)
    except CatalogError as exc:
        raise UsageError(str(exc)) from exc
    described = summary.to_dict()
    described["filename"] = upload.filename
    return JSONResponse(described)


async def images_endpoint(request: Request) -> Response:
    """Images containing one position (POS in degrees or sexagesimal), filtered like a
    catalog job (COLLECTION, INSTRUMENT, BANDNAME, PRODUCTTYPE; repeatable)."""
    params = await read_params(request)
    text = params.get_single("POS")
    if text is None:
        raise UsageError("POS is missing; give 'ra dec' in degrees or sexagesimal")
    try:
        ra, dec = choices.parse_position(text)
    except ValueError as exc:
        raise UsageError(f"POS: {exc}") from exc
    filters = {name: params.get_all(key) or None for name, key in (
        ("collection", "COLLECTION"), ("instrument", "INSTRUMENT"), ("band", "BANDNAME"),
        ("product_type", "PRODUCTTYPE"))}
    index = request.app.state.index
    found = await run_in_threadpool(lambda: index.lookup(np.array([ra]), np.array([dec]),
                                                         **filters))
    images = [{"id": record.obs_publisher_did, "obs_id": record.obs_id, "band": record.band,
               "product_type": record.product_type, "instrument": record.instrument_name,
               "pixel_scale_arcsec": choices.pixel_scale_arcsec(record)}
              for _, record in found if record.dataproduct_type == "image"]
    return JSONResponse({"ra": ra, "dec": dec, "images": images})


def _job_summary(store: JobStore, job: JobRecord) -> dict:
    parameters: dict[str, list[str]] = {}
    for parameter in store.parameters(job.job_id):
        if parameter.name.upper() in SUMMARY_PARAMETERS:
            parameters.setdefault(parameter.name.upper(), []).append(parameter.value)
    return {"job_id": job.job_id, "kind": job.kind, "phase": job.phase.value,
            "run_id": job.run_id, "creation_time": job.creation_time,
            "start_time": job.start_time, "end_time": job.end_time,
            "progress": {"done": job.progress_done, "total": job.progress_total},
            "error": job.error_message, "parameters": parameters}


async def jobs_endpoint(request: Request) -> Response:
    """The caller's jobs (newest first) with their phase, progress and main parameters;
    TAP queries (listed at /tap/async) are not cutout jobs and are left out."""
    store, owner = _store(request), request_owner(request)

    def listing() -> list[dict]:
        return [_job_summary(store, job)
                for job in store.list(last=MAX_JOBS_LISTED, owner_id=owner)
                if job.kind != "tap"]

    return JSONResponse({"jobs": await run_in_threadpool(listing)})


def _band_wavelengths(request: Request) -> dict[str, float]:
    return choices.band_order(request.app.state.index.combinations())


def _result_path(service: JobService, job_id: str, result_id: str) -> Path | None:
    """The file of a whole-file result (a manifest, a MOC), or None."""
    found = service.result_file(job_id, result_id)
    return found[1] if found is not None and found[0].offset is None else None


def _result_bytes(service: JobService, job_id: str, result_id: str) -> bytes | None:
    """The bytes of a FITS stamp result (a file, or a member of the job's bundle)."""
    found = service.result_file(job_id, result_id)
    if found is None or found[0].mime_type != "application/fits":
        return None
    result, path = found
    return read_result(path, result)


def _load_gallery(request: Request, job: JobRecord) -> gallery.Gallery | None:
    manifest = _result_path(_service(request), job.job_id, "manifest")
    if manifest is None:
        return None
    return gallery.load_gallery(manifest, _band_wavelengths(request))


async def gallery_endpoint(request: Request) -> Response:
    """A page of the job's targets: stamps per band x product type, or why there are none."""
    job = _job(request)
    params = await read_params(request)
    offset = parse_int("OFFSET", params.get_single("OFFSET") or "0", minimum=0)
    limit = parse_int("LIMIT", params.get_single("LIMIT") or str(GALLERY_PAGE), minimum=1)
    found = await run_in_threadpool(_load_gallery, request, job)
    answer = {"job_id": job.job_id, "phase": job.phase.value, "error": job.error_message,
              "ready": found is not None}
    if found is not None:
        answer.update(found.page(offset, min(limit, 200)))
    return JSONResponse(answer)


def _preview_options(params, size_default: int) -> PreviewOptions:  # noqa: ANN001 - Params
    values = {name: params.get_single(name) for name in ("STRETCH", "LIMITS", "INVERT")}
    values["SIZE"] = params.get_single("SIZE") or str(size_default)
    try:
        options = PreviewOptions.from_params(values)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if options.size is not None and options.size > MAX_THUMB_SIZE:
        raise UsageError(f"SIZE must be at most {MAX_THUMB_SIZE} pixels")
    return options


async def thumb_endpoint(request: Request) -> Response:
    """PNG of one FITS stamp of the job (STRETCH, LIMITS, INVERT, SIZE)."""
    job = _job(request)
    result_id = request.path_params["result_id"]
    params = await read_params(request)
    options = _preview_options(params, 160)
    service = _service(request)
    try:
        stamp = await run_in_threadpool(_result_bytes, service, job.job_id, result_id)
        if stamp is None:
            raise NotFound(f"job {job.job_id} has no FITS stamp {result_id!r}")
        content = await run_in_threadpool(gallery.render_thumbnail, stamp, options)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot render {result_id}: {exc}") from exc
    return Response(content, media_type=options.media_type, headers=IMAGE_HEADERS)


async def composite_endpoint(request: Request) -> Response:
    """Lupton RGB composite of one target from the job's three bands (SIZE)."""
    job = _job(request)
    params = await read_params(request)
    size = parse_int("SIZE", params.get_single("SIZE") or "160", minimum=8)
    found = await run_in_threadpool(_load_gallery, request, job)
    row = request.path_params["row"]
    target = found.target(row) if found is not None else None
    if found is None or target is None or not found.composite_bands:
        raise NotFound(f"job {job.job_id} has no colour composite for row {row}")
    service, stamps = _service(request), []
    try:
        for band, cells in zip(found.composite_bands, found.composite_stamps(target),
                               strict=True):
            fits_ids = [s.result_id for s in cells if s.is_fits and s.result_id]
            stamp = await run_in_threadpool(_result_bytes, service, job.job_id,
                                            fits_ids[0]) if fits_ids else None
            if stamp is None:
                raise NotFound(f"target {target.target_id} has no {band} "
                               f"{found.composite_product} FITS stamp for a composite")
            stamps.append(stamp)
        content = await run_in_threadpool(gallery.render_colour, stamps,
                                          min(size, MAX_THUMB_SIZE))
    except (CompositeError, OSError, ValueError) as exc:
        raise UsageError(f"cannot make a colour composite of {target.target_id}: {exc}"
                         ) from exc
    return Response(content, media_type="image/png", headers=IMAGE_HEADERS)
