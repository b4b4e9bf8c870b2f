"""Where the archive has data: coverage MOCs (``/coverage``) and footprint region files
(``/footprints``).

``GET /coverage``: the IVOA MOC 2.0 of the indexed footprints, as FITS (default), JSON or
ASCII (``FORMAT`` or ``RESPONSEFORMAT``: ``fits``, ``json``, ``ascii`` or their MIME types;
without either, the ``Accept`` header chooses). ``COLLECTION``, ``INSTRUMENT``,
``BANDNAME`` and ``PRODUCTTYPE`` (repeatable: any of the values) select the images, as on
SIA. The MOC is built once per index generation and selection
(:class:`vo_service.archive.coverage.CoverageCache`).

``GET /footprints``: the same selection's footprints as a DS9 (``FORMAT=ds9``, default) or
CASA CRTF (``FORMAT=crtf``) region file, at most ``MAXREC`` of them.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from vo_service.archive import region_files
from vo_service.archive.coverage import (
    Coverage,
    CoverageCache,
    Selection,
    moc_ascii,
    moc_fits_bytes,
    moc_json,
)
from vo_service.archive.region_files import LabelledPolygon
from vo_service.protocols import dali

MOC_STANDARD_ID = "ivo://ivoa.net/std/moc"
# name (query parameter) -> ArchiveIndex.records keyword, as the SIA parameters
FILTER_PARAMETERS = {"COLLECTION": "collection", "INSTRUMENT": "instrument",
                     "BANDNAME": "band", "PRODUCTTYPE": "product_type"}
MOC_FORMATS = {"fits": "fits", "application/fits": "fits", "image/fits": "fits",
               "json": "json", "application/json": "json",
               "ascii": "ascii", "text": "ascii", "text/plain": "ascii"}
MOC_MIME = {"fits": "application/fits", "json": "application/json", "ascii": "text/plain"}


def routes() -> list[BaseRoute]:
    """The coverage endpoints, to add to the application's routes."""
    return [Route("/coverage", coverage_endpoint, methods=["GET"]),
            Route("/footprints", footprints_endpoint, methods=["GET"])]


def coverage_cache(request: Request) -> CoverageCache:
    """The application's coverage cache (made on first use, files under the state dir)."""
    state = request.app.state
    if getattr(state, "coverage", None) is None:
        state.coverage = CoverageCache(state.index, state.settings.state_dir / "coverage")
    return state.coverage


def selection_of(params: dali.Params) -> Selection:
    """The images a request selects (each filter repeatable, values OR'ed)."""
    return Selection.of(**{keyword: params.get_all(name)
                           for name, keyword in FILTER_PARAMETERS.items()})


def moc_format(params: dali.Params, accept: str) -> str:
    """``fits``, ``json`` or ``ascii`` from FORMAT/RESPONSEFORMAT, else from Accept."""
    requested = params.get_single("FORMAT") or params.get_single("RESPONSEFORMAT")
    if requested is not None:
        bare = requested.split(";")[0].strip().lower()
        if bare not in MOC_FORMATS:
            raise dali.UsageError(f"FORMAT {requested!r} is not offered for a MOC; use fits, "
                                  "json or ascii")
        return MOC_FORMATS[bare]
    ranked = []
    for position, item in enumerate(accept.split(",")):
        media, *options = (part.strip().lower() for part in item.split(";"))
        weight = next((o[2:] for o in options if o.startswith("q=")), "1")
        try:
            ranked.append((-float(weight), position, media))
        except ValueError:
            continue
    for _weight, _position, media in sorted(ranked):
        if media in MOC_FORMATS and _weight < 0:
            return MOC_FORMATS[media]
    return "fits"


def moc_response(coverage: Coverage, fmt: str, *, etag: str, moc_id: str | None = None,
                 filename: str = "coverage") -> Response:
    """A MOC in one of its serialisations, with its ETag (re-validate: the index changes)."""
    headers = {"ETag": etag, "Cache-Control": "no-cache",
               "Content-Disposition": f'inline; filename="{filename}.{_SUFFIX[fmt]}"'}
    if fmt == "json":
        return JSONResponse(moc_json(coverage.moc), headers=headers)
    if fmt == "ascii":
        return PlainTextResponse(moc_ascii(coverage.moc) + "\n", headers=headers)
    return Response(moc_fits_bytes(coverage.moc, moc_id=moc_id), media_type=MOC_MIME["fits"],
                    headers=headers)


_SUFFIX = {"fits": "fits", "json": "json", "ascii": "txt"}


async def coverage_endpoint(request: Request) -> Response:
    """GET ``/coverage``: the MOC of the selected images' footprints."""
    params = await dali.read_params(request)
    fmt = moc_format(params, request.headers.get("accept", ""))
    selection = selection_of(params)
    cache = coverage_cache(request)
    generation = await run_in_threadpool(cache.index.generation)
    etag = f'"{selection.key()}-g{generation}-{fmt}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    coverage = await run_in_threadpool(cache.get, selection)
    etag = f'"{selection.key()}-g{coverage.generation}-{fmt}"'
    return await run_in_threadpool(moc_response, coverage, fmt, etag=etag,
                                   moc_id=f"{dali.public_base_url(request)}/coverage")


def _footprints(index, selection: Selection, maxrec: int,  # noqa: ANN001 - ArchiveIndex
                ) -> tuple[list[LabelledPolygon], int]:
    """Distinct footprints of the selection (sibling products share one), at most
    ``maxrec``, and how many there are in all."""
    shapes: dict[tuple, LabelledPolygon] = {}
    for record in index.records(**selection.filters()):
        if not record.s_region:
            continue
        key = tuple((round(ra, 7), round(dec, 7)) for ra, dec in record.s_region)
        if key not in shapes:
            what = " ".join(p for p in (record.instrument_name, record.band) if p)
            label = f"{record.tile or record.obs_id} {what}".strip()
            shapes[key] = LabelledPolygon(record.s_region, label)
    found = list(shapes.values())
    return found[:maxrec], len(found)


async def footprints_endpoint(request: Request) -> Response:
    """GET ``/footprints``: the selected images' footprints as a DS9 or CRTF region file."""
    params = await dali.read_params(request)
    try:
        fmt = region_files.region_format(params.get_single("FORMAT")
                                         or params.get_single("RESPONSEFORMAT"))
    except ValueError as exc:
        raise dali.UsageError(f"FORMAT: {exc}") from exc
    limits = request.app.state.settings.limits
    maxrec_text = params.get_single("MAXREC")
    maxrec = limits.maxrec_default if maxrec_text is None else dali.parse_int(
        "MAXREC", maxrec_text, minimum=0)
    selection = selection_of(params)
    polygons, total = await run_in_threadpool(_footprints, request.app.state.index,
                                              selection, maxrec)
    text = await run_in_threadpool(region_files.region_file, polygons, [], fmt)
    if total > len(polygons):  # as DALI's OVERFLOW: say that the answer was cut
        first, _, rest = text.partition("\n")  # CRTF needs its "#CRTFv0" line first
        text = (f"{first}\n# OVERFLOW: only {len(polygons)} of {total} footprints, raise "
                f"MAXREC or narrow the selection\n{rest}")
    return Response(text, media_type=region_files.MIME[fmt], headers={
        "Content-Disposition": f'inline; filename="footprints.{region_files.SUFFIX[fmt]}"'})
