"""Helpers of the page's sky view and SAMP hand-off (``/api/footprints``, ``/api/jobs/<id>/
sky``, ``/api/jobs/<id>/regions``).

The archive's footprints as JSON polygons for the sky view; a finished job's targets (with
the manifest row SAMP's ``table.highlight.row`` names) and its stamps' footprints; the same
as a DS9 or CRTF region file. A job's sky is read from its manifest once per file version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from vo_service.archive import region_files
from vo_service.jobs.job_coverage import COVERAGE_RESULT, JobSky, job_sky
from vo_service.protocols import dali
from vo_service.protocols.coverage import selection_of
from vo_service.web.routes import _job, _result_path, _store

MAX_FOOTPRINTS = 5000  # polygons the page draws at once; more: narrow the selection
_CACHE_SIZE = 4
_skies: OrderedDict[tuple[str, int], JobSky] = OrderedDict()
_skies_lock = threading.Lock()


def routes() -> list[BaseRoute]:
    """The sky view's helper endpoints."""
    return [
        Route("/api/footprints", footprints_endpoint, methods=["GET"]),
        Route("/api/jobs/{job_id}/sky", job_sky_endpoint, methods=["GET"]),
        Route("/api/jobs/{job_id}/regions", job_regions_endpoint, methods=["GET"]),
    ]


def archive_footprints(index, selection, limit: int) -> dict:  # noqa: ANN001
    """Distinct footprints of the selected images (sibling products share one), with what
    they show, at most ``limit``."""
    shapes: dict[tuple, dict] = {}
    for record in index.records(**selection.filters()):
        if not record.s_region:
            continue
        key = tuple((round(ra, 7), round(dec, 7)) for ra, dec in record.s_region)
        found = shapes.setdefault(key, {
            "label": f"{record.tile or record.obs_id} {record.band or ''}".strip(),
            "collection": record.obs_collection, "instrument": record.instrument_name,
            "band": record.band, "tile": record.tile, "products": [],
            "vertices": [list(v) for v in record.s_region]})
        if record.product_type and record.product_type not in found["products"]:
            found["products"].append(record.product_type)
    everything = list(shapes.values())
    return {"footprints": everything[:limit], "total": len(everything),
            "truncated": len(everything) > limit}


async def footprints_endpoint(request: Request) -> Response:
    """The archive's footprints (COLLECTION, INSTRUMENT, BANDNAME, PRODUCTTYPE select)."""
    params = await dali.read_params(request)
    found = await run_in_threadpool(archive_footprints, request.app.state.index,
                                    selection_of(params), MAX_FOOTPRINTS)
    return JSONResponse(found)


def _sky_of(manifest: Path, index) -> JobSky:  # noqa: ANN001
    key = (str(manifest), manifest.stat().st_mtime_ns)
    with _skies_lock:
        if key in _skies:
            _skies.move_to_end(key)
            return _skies[key]
    sky = job_sky(manifest, index)
    with _skies_lock:
        _skies[key] = sky
        while len(_skies) > _CACHE_SIZE:
            _skies.popitem(last=False)
    return sky


async def _job_sky(request: Request) -> JobSky:
    job = _job(request)
    manifest = _result_path(_store(request), job.job_id, "manifest")
    if manifest is None:
        raise dali.NotFound(f"job {job.job_id} has no manifest yet (phase {job.phase.value})")
    return await run_in_threadpool(_sky_of, manifest, request.app.state.index)


async def job_sky_endpoint(request: Request) -> Response:
    """A finished job's targets and stamp footprints, and where its MOC is."""
    sky = await _job_sky(request)
    job_id = request.path_params["job_id"]
    has_moc = _result_path(_store(request), job_id, COVERAGE_RESULT) is not None
    return JSONResponse({
        "targets": [asdict(t) for t in sky.targets],
        "stamps": [{"row": s.row, "band": s.band, "vertices": [list(v) for v in s.vertices]}
                   for s in sky.stamps],
        "coverage": f"async/{job_id}/results/{COVERAGE_RESULT}" if has_moc else None})


async def job_regions_endpoint(request: Request) -> Response:
    """A finished job's targets and stamp footprints as a DS9 (FORMAT=ds9, default) or CRTF
    (FORMAT=crtf) region file."""
    params = await dali.read_params(request)
    try:
        fmt = region_files.region_format(params.get_single("FORMAT"))
    except ValueError as exc:
        raise dali.UsageError(f"FORMAT: {exc}") from exc
    sky = await _job_sky(request)
    polygons, points = sky.region_shapes()
    text = await run_in_threadpool(region_files.region_file, polygons, points, fmt)
    name = f"job-{request.path_params['job_id']}.{region_files.SUFFIX[fmt]}"
    return Response(text, media_type=region_files.MIME[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
