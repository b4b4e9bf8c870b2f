"""SODA 1.0 {sync}: cutouts of archive images over HTTP GET and POST (``/sync``).

The request is parsed once into a :class:`~vo_service.products.cutout_request.CutoutRequest`;
the product (one FITS file, or a PNG/JPEG preview) is made off the event loop by
:mod:`vo_service.products.cutouts` through the cutout cache, so an identical request is a
verified file lookup (header ``X-Cache: hit``). This module holds the HTTP side only:
parameters -> request, admission, response headers and streaming. Decisions where
SODA leaves a choice (DESIGN.md "Decisions", docs/soda.md):

- several IDs and/or spatial shapes in one FITS request give one multi-extension file,
  one image extension per ID x shape; for PNG/JPEG that is MultiValuedParamNotSupported;
- POL is one filter; BAND and TIME are single-valued on sync;
- no spatial overlap at all is 204 with an empty body (SODA §5.3); a BAND, TIME or POL
  that selects nothing of a dataset is a 400 UsageError naming the dataset's range;
- an ID without any filter is a 400 UsageError: never the whole file where a cutout was
  asked for (the file itself is linked from DataLink ``#this``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vo_service.archive.records import ImageRecord
from vo_service.cache import CachedFile, CutoutCache
from vo_service.engine.preview import PreviewOptions
from vo_service.products import stitching
from vo_service.products.cutout_request import (
    FITS_MIME,
    PREVIEW_MIMES,
    CutoutRequest,
    parse_cutout_values,
)
from vo_service.products.cutouts import NoOverlap, download_name, fetch_product, lookup_records
from vo_service.products.memory import MemoryBudget
from vo_service.products.product_options import (
    ProductError,
    ProductOptions,
    parse_columns,
    parse_psf_method,
)
from vo_service.products.product_requests import (
    NoProductOverlap,
    fetch_product_answer,
    is_product_request,
)
from vo_service.protocols.dali import (
    VOTABLE_MIME,
    DALIError,
    MultiValuedParamNotSupported,
    Params,
    ServiceUnavailable,
    UsageError,
    parse_responseformat,
    public_base_url,
    read_params,
    request_error_response,
)
from vo_service.protocols.error_format import (
    PLAIN_ERRORS_KEY,
    accept_prefers_votable,
    names_votable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SYNC_STANDARD_ID = "ivo://ivoa.net/std/SODA#sync-1.0"
PREVIEW_PARAMS = ("STRETCH", "LIMITS", "INVERT", "BINNING", "SIZE", "QUALITY")
MAX_SYNC_CUTOUTS = 256  # ID x shape combinations in one sync response
INLINE_BYTES = 1024 * 1024  # products up to this size are sent in one piece
RETRY_AFTER_SECONDS = 5


def _single(name: str, values: tuple[T, ...]) -> T | None:
    """A parameter SODA allows to repeat but this sync endpoint does not."""
    if len(values) > 1:
        raise MultiValuedParamNotSupported(
            f"{name} was given {len(values)} times; sync accepts one {name} per request "
            "(use /async for one result per value)")
    return values[0] if values else None


def refuse_tap(params: Params, base: str = "") -> None:
    """A TAP request (LANG, QUERY or REQUEST=doQuery) is a UsageError saying that /sync and
    /async are SODA here and where TAP is (``<base>/tap``), rather than "ID is missing"."""
    asks_tap = "LANG" in params or "QUERY" in params or any(
        value.strip().lower() == "doquery" for value in params.get_all("REQUEST"))
    if asks_tap:
        raise UsageError(
            f"this endpoint is SODA (image cutouts); TAP is at {base}/tap: LANG, QUERY and "
            f"REQUEST=doQuery are TAP parameters. Use {base}/tap as the TAP service URL "
            f"(queries go to {base}/tap/sync or {base}/tap/async), or cut images here with "
            "ID and CIRCLE, POLYGON or POS")


def parse_stitch(params: Params) -> stitching.Stitching | None:
    """The service-specific STITCH parameter (none, interp or flux; docs/soda.md)."""
    try:
        method = stitching.parse_stitch(params.get_single(stitching.STITCH_PARAMETER))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return stitching.Stitching(method) if method else None


def parse_sync_request(params: Params, base: str = "") -> CutoutRequest:
    """Validate the SODA parameters of a sync request (raises DALIError subclasses);
    ``base``: the service's public URL, named when a TAP request arrives here."""
    refuse_tap(params, base)
    if not params.get_all("ID"):
        raise UsageError("ID is missing; give the publisher DID of an image, as listed by "
                         "/query (obs_publisher_did) or /links")
    values = parse_cutout_values(params.pairs)
    band, time = _single("BAND", values.bands), _single("TIME", values.times)
    if not values.selects_a_part:
        raise UsageError("give CIRCLE, POLYGON or POS (or BAND, TIME, POL) to say which part "
                         "of the image to cut; the whole file is linked from /links (#this)")
    ids, regions = values.ids, values.regions
    response_format = parse_responseformat(params.get_single("RESPONSEFORMAT"),
                                           (FITS_MIME, *PREVIEW_MIMES, VOTABLE_MIME),
                                           default=FITS_MIME)
    preview = None
    if response_format.mime in PREVIEW_MIMES:
        if len(ids) * max(1, len(regions)) > 1:
            raise MultiValuedParamNotSupported(
                f"RESPONSEFORMAT {response_format.mime} shows one cutout; this request asks "
                f"for {len(ids)} ID(s) x {max(1, len(regions))} region(s). Send one ID and "
                "one region, or ask for FITS (one extension per cutout)")
        options = {name: params.get_single(name) for name in PREVIEW_PARAMS}
        try:
            preview = PreviewOptions.from_params(
                options, fmt=response_format.mime.removeprefix("image/"))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    request = CutoutRequest(ids, regions, band, time, values.pol, response_format, preview,
                            params.get_single("RUNID"), parse_stitch(params))
    if request.cutout_count > MAX_SYNC_CUTOUTS:
        raise UsageError(f"{request.cutout_count} cutouts (ID x region) in one sync request, "
                         f"more than {MAX_SYNC_CUTOUTS}; split it or use /async")
    return request


# ---------------------------------------------------------------------------------------
# HTTP


class SyncSlots:
    """How many sync cutouts run at once (event-loop only, so a plain counter suffices)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self.busy = 0

    def try_acquire(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def release(self) -> None:
        self.busy -= 1


def _state(request: Request) -> tuple[object, CutoutCache, SyncSlots, MemoryBudget]:
    """Settings, cache, slot counter and memory budget of the app (created on first use)."""
    state = request.app.state
    settings = state.settings
    if getattr(state, "cache", None) is None:
        state.cache = CutoutCache(settings.cache_dir, settings.limits.cache_bytes)
    if getattr(state, "sync_slots", None) is None:
        state.sync_slots = SyncSlots(settings.limits.max_sync_concurrency)
    if getattr(state, "sync_memory", None) is None:
        state.sync_memory = MemoryBudget(settings.limits.sync_memory_bytes)
    return settings, state.cache, state.sync_slots, state.sync_memory


@dataclass
class _Answer:
    records: list[ImageRecord]
    cached: CachedFile
    hit: bool
    key: str
    content: bytes | None  # the whole product when small, else None (stream ``cached``)


def _from_its_file(cached: CachedFile) -> CachedFile:
    """A product just computed, to be streamed from the file the cache wrote rather than
    from memory (the bytes are dropped before the request's memory is given back); the
    in-memory copy when the file is already gone (evicted) or not whole."""
    try:
        handle = open(cached.path, "rb")  # noqa: SIM115 - closed by iter_chunks
    except OSError:
        return cached
    if os.fstat(handle.fileno()).st_size != cached.size:
        handle.close()
        return cached
    cached.close()
    return CachedFile(handle, cached.path, cached.size)


def product_options(params: Params) -> ProductOptions:
    """PSF= and COLUMNS= of a request for a PSF or catalog product (docs/products.md)."""
    try:
        return ProductOptions(parse_psf_method(params.get_single("PSF")),
                              parse_columns(params.get_all("COLUMNS")))
    except ProductError as exc:
        raise UsageError(str(exc)) from exc


def _product_answer(index: object, cache: CutoutCache, request: CutoutRequest,
                    records: list[ImageRecord], max_pixels: int,
                    options: ProductOptions) -> _Answer:
    """The answer for the ID of a PSF or catalog product (docs/products.md)."""
    try:
        cached, hit, key = fetch_product_answer(cache, index, records[0], request.regions,
                                                request.response_format.mime, options,
                                                max_pixels)
    except ProductError as exc:
        raise UsageError(str(exc)) from exc
    except NoProductOverlap as exc:
        raise NoOverlap() from exc
    content = None
    if cached.size <= INLINE_BYTES:
        with cached:
            content = cached.handle.read()
    return _Answer(records, cached, hit, key, content)


def _answer(index: object, cache: CutoutCache, request: CutoutRequest, max_pixels: int,
            budget: MemoryBudget, options: ProductOptions | None = None) -> _Answer:
    """Everything blocking of one request, in one worker-thread hop: lookup, cache, read."""
    records = lookup_records(index, request.ids)
    try:
        special = is_product_request(records)  # a PSF or a catalog: answered, not cut
    except ProductError as exc:
        raise UsageError(str(exc)) from exc
    if special:
        return _product_answer(index, cache, request, records, max_pixels,
                               options or ProductOptions())
    if request.response_format.mime == VOTABLE_MIME:
        raise UsageError("RESPONSEFORMAT VOTable is for catalog products; an image is cut "
                         "as application/fits, image/png or image/jpeg")
    request = replace(request, stitch=stitching.resolve(index, request.stitch, records))
    with budget.hold() as hold:  # memory reserved by the cutting, if any, until the end
        cached, hit, key = fetch_product(cache, request, records, max_pixels, hold)
        content = None
        if cached.size <= INLINE_BYTES:
            with cached:
                content = cached.handle.read()
        elif not hit:
            cached = _from_its_file(cached)
    return _Answer(records, cached, hit, key, content)


async def _sync(request: Request) -> Response:
    settings, cache, slots, budget = _state(request)
    params = await read_params(request)
    if names_votable(params.get_all("RESPONSEFORMAT")):
        request.scope[PLAIN_ERRORS_KEY] = False
    sync_request = parse_sync_request(params, public_base_url(request))
    options = product_options(params)
    if not slots.try_acquire():
        raise ServiceUnavailable(
            f"{slots.limit} cutouts are being made already; retry in a few seconds",
            retry_after=RETRY_AFTER_SECONDS)
    try:
        answer = await anyio.to_thread.run_sync(
            _answer, request.app.state.index, cache, sync_request,
            settings.limits.max_cutout_pixels, budget, options)
    except NoOverlap:
        log.info("sync runid=%s: no overlap", sync_request.runid)
        return Response(status_code=204)
    finally:
        slots.release()
    log.info("sync runid=%s ids=%d regions=%d format=%s cache=%s bytes=%d",
             sync_request.runid, len(sync_request.ids), len(sync_request.regions),
             sync_request.response_format.mime, "hit" if answer.hit else "miss",
             answer.cached.size)
    disposition = "inline" if sync_request.preview else "attachment"
    filename = download_name(sync_request, answer.records, answer.key)
    headers = {
        "Content-Disposition": f'{disposition}; filename="{filename}"',
        "Content-Length": str(answer.cached.size),
        "X-Cache": "hit" if answer.hit else "miss",
        "ETag": f'"{answer.key}"',
    }
    media_type = sync_request.response_format.content_type
    if answer.content is not None:
        return Response(answer.content, media_type=media_type, headers=headers)
    return StreamingResponse(answer.cached.iter_chunks(), media_type=media_type,
                             headers=headers)


async def sync_endpoint(request: Request) -> Response:
    """GET/POST ``/sync``: a SODA cutout, or a DALI error with the right status.

    The error is text/plain ``<label>: <message>`` (SODA §5.2; what pyvo shows its users)
    unless the client asks for the DALI error VOTable with ``Accept`` or a VOTable
    ``RESPONSEFORMAT`` (:mod:`~vo_service.protocols.error_format`).
    """
    request.scope["vo_standard_id"] = SYNC_STANDARD_ID
    request.scope[PLAIN_ERRORS_KEY] = not accept_prefers_votable(request.headers.get("accept"))
    try:
        return await _sync(request)
    except DALIError as exc:
        log.info("sync error %d: %s", exc.status, exc.text)
        return request_error_response(request, exc)
