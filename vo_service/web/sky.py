"""Helpers of the page's sky view and SAMP hand-off (``/api/footprints``, ``/api/jobs/<id>/
sky``, ``/api/jobs/<id>/regions``).

The archive's footprints as JSON polygons for the sky view; a finished job's targets (with
the manifest row SAMP's ``table.highlight.row`` names) and its stamps' footprints; the same
as a DS9 or CRTF region file.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from vo_service.archive import region_files
from vo_service.archive.footprint import load_celestial_image
from vo_service.jobs.job_coverage import COVERAGE_RESULT, JobSky, job_sky
from vo_service.protocols import dali
from vo_service.protocols.coverage import selection_of
from vo_service.protocols.datalink import PREVIEW_SIDE
from vo_service.web.routes import _job, _result_path, _service, _store

MAX_FOOTPRINTS = 5000  # polygons the page draws at once; more: narrow the selection


def routes() -> list[BaseRoute]:
    """The sky view's helper endpoints."""
    return [
        Route("/api/footprints", footprints_endpoint, methods=["GET"]),
        Route("/api/preview-wcs", preview_wcs_endpoint, methods=["GET"]),
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
            "image_id": record.obs_publisher_did, "type": record.dataproduct_type,
            "collection": record.obs_collection, "instrument": record.instrument_name,
            "band": record.band, "tile": record.tile, "products": [],
            "vertices": [list(v) for v in record.s_region]})
        if record.product_type and record.product_type not in found["products"]:
            found["products"].append(record.product_type)
        if record.product_type == "BGSUB":  # the picture to show for the footprint
            found["image_id"] = record.obs_publisher_did
    everything = list(shapes.values())
    return {"footprints": everything[:limit], "total": len(everything),
            "truncated": len(everything) > limit}


async def footprints_endpoint(request: Request) -> Response:
    """The archive's footprints (COLLECTION, INSTRUMENT, BANDNAME, PRODUCTTYPE select)."""
    params = await dali.read_params(request)
    found = await run_in_threadpool(archive_footprints, request.app.state.index,
                                    selection_of(params), MAX_FOOTPRINTS)
    return JSONResponse(found)


def preview_wcs(record) -> dict | None:  # noqa: ANN001 - ImageRecord
    """The celestial WCS of the whole-image preview ``/preview?ID=`` draws (every step-th
    pixel of each axis, see ``datalink.downsampled_plane``) as FITS keywords, linear part
    only (SIP dropped: off by a fraction of a binned pixel at most on a preview)."""
    celestial = load_celestial_image(record.path, record.hdu, record.mtime)
    if celestial is None:
        return None
    wcs = celestial.wcs.celestial.deepcopy()
    steps = [max(1, math.ceil(n / PREVIEW_SIDE)) for n in (celestial.nx, celestial.ny)]
    # preview pixel p (1-based) is source pixel (p - 1) * step + 1
    wcs.wcs.crpix = [(c - 1) / step + 1 for c, step in zip(wcs.wcs.crpix, steps, strict=True)]
    matrix = wcs.pixel_scale_matrix * np.array(steps)[np.newaxis, :]
    keywords = {"NAXIS": 2, "NAXIS1": math.ceil(celestial.nx / steps[0]),
                "NAXIS2": math.ceil(celestial.ny / steps[1]),
                "CTYPE1": wcs.wcs.ctype[0].replace("-SIP", ""),
                "CTYPE2": wcs.wcs.ctype[1].replace("-SIP", ""),
                "CRPIX1": wcs.wcs.crpix[0], "CRPIX2": wcs.wcs.crpix[1],
                "CRVAL1": wcs.wcs.crval[0], "CRVAL2": wcs.wcs.crval[1],
                "CD1_1": matrix[0, 0], "CD1_2": matrix[0, 1],
                "CD2_1": matrix[1, 0], "CD2_2": matrix[1, 1],
                "RADESYS": wcs.wcs.radesys or "ICRS"}
    if wcs.wcs.equinox and math.isfinite(wcs.wcs.equinox):
        keywords["EQUINOX"] = wcs.wcs.equinox
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in keywords.items()}


async def preview_wcs_endpoint(request: Request) -> Response:
    """The WCS of an image's ``/preview`` PNG (``ID``), for laying it on the sky view."""
    params = await dali.read_params(request)
    did = params.get_single("ID")
    if did is None:
        raise dali.UsageError("ID is required: the publisher DID of the image")
    record = await run_in_threadpool(request.app.state.index.get, did)
    if record is None:
        raise dali.NotFound(f"no image with ID {did!r} in this archive")
    keywords = await run_in_threadpool(preview_wcs, record)
    if keywords is None:
        raise dali.NotFound(f"the image {did!r} has no celestial WCS")
    return JSONResponse(keywords)


async def _job_sky(request: Request) -> JobSky:
    job = _job(request)
    manifest = _result_path(_service(request), job.job_id, "manifest")
    if manifest is None:
        raise dali.NotFound(f"job {job.job_id} has no manifest yet (phase {job.phase.value})")
    return await run_in_threadpool(job_sky, manifest, request.app.state.index)


async def job_sky_endpoint(request: Request) -> Response:
    """A finished job's targets and stamp footprints, and where its MOC is."""
    sky = await _job_sky(request)
    job_id = request.path_params["job_id"]
    has_moc = _store(request).result(job_id, COVERAGE_RESULT) is not None
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
