"""SODA 1.0 {sync}: cutouts of archive images over HTTP GET and POST (``/sync``).

The request is parsed once into a :class:`SyncRequest`; the product (one FITS file, or a
PNG/JPEG preview) is computed off the event loop through the cutout cache, so an
identical request is a verified file lookup (header ``X-Cache: hit``). Decisions where
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
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from vo_service.archive.records import ImageRecord
from vo_service.cache import CachedFile, CutoutCache, make_key, source_identity
from vo_service.engine.batch import iter_cutouts, multi_extension_chunks
from vo_service.engine.cutout import CutoutResult, describe_region, plan_cutouts
from vo_service.engine.preview import PreviewOptions
from vo_service.engine.reading import OpenImagePool
from vo_service.engine.spectral import CutoutError
from vo_service.engine.writing import card, empty_primary_bytes, history_cards
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
    NotFound,
    Params,
    ResponseFormat,
    ServiceUnavailable,
    UsageError,
    parse_circle,
    parse_interval,
    parse_polygon,
    parse_pos,
    parse_responseformat,
    read_params,
    request_error_response,
)
from vo_service.protocols.error_format import (
    PLAIN_ERRORS_KEY,
    accept_prefers_votable,
    names_votable,
)
from vo_service.protocols.sync_memory import Hold, MemoryBudget, working_bytes
from vo_service.shapes import Range, Shape

log = logging.getLogger(__name__)

SYNC_STANDARD_ID = "ivo://ivoa.net/std/SODA#sync-1.0"
FITS_MIME = "application/fits"
PREVIEW_MIMES = ("image/png", "image/jpeg")
PREVIEW_PARAMS = ("STRETCH", "LIMITS", "INVERT", "BINNING", "SIZE", "QUALITY")
POL_LABELS = ("I", "Q", "U", "V", "RR", "LL", "RL", "LR", "XX", "YY", "XY", "YX",
              "POLI", "POLA")
MAX_SYNC_CUTOUTS = 256  # ID x shape combinations in one sync response
INLINE_BYTES = 1024 * 1024  # products up to this size are sent in one piece
RETRY_AFTER_SECONDS = 5
KEY_VERSION = 2  # bump when the bytes of a product change for the same request
# 2: tight boxes for CIRCLE/POLYGON/RANGE; lookup-table EXTVERs renumbered per extension
EVERYWHERE = Range(-math.inf, math.inf, -math.inf, math.inf)


class NoOverlap(Exception):
    """No requested region overlaps any requested image: SODA answers 204."""


@dataclass(frozen=True)
class SyncRequest:
    """One SODA sync request, parsed and validated (values in SODA units)."""

    ids: tuple[str, ...]
    regions: tuple[Shape, ...]  # in request order; empty = the whole spatial extent
    band: tuple[float, float] | None  # barycentric wavelength, m
    time: tuple[float, float] | None  # MJD
    pol: tuple[str, ...] | None  # one filter
    response_format: ResponseFormat
    preview: PreviewOptions | None  # set for image/png and image/jpeg
    runid: str | None

    @property
    def cutout_count(self) -> int:
        return len(self.ids) * max(1, len(self.regions))


def _single(params: Params, name: str) -> str | None:
    """A parameter SODA allows to repeat but this sync endpoint does not."""
    values = params.get_all(name)
    if len(values) > 1:
        raise MultiValuedParamNotSupported(
            f"{name} was given {len(values)} times; sync accepts one {name} per request "
            "(use /async for one result per value)")
    return values[0] if values else None


def refuse_tap(params: Params) -> None:
    """A TAP request (LANG, QUERY or REQUEST=doQuery) is a UsageError saying that /sync and
    /async are SODA here and that TAP is not offered, rather than "ID is missing"."""
    asks_tap = "LANG" in params or "QUERY" in params or any(
        value.strip().lower() == "doquery" for value in params.get_all("REQUEST"))
    if asks_tap:
        raise UsageError(
            "this endpoint is SODA (image cutouts), and this service offers no TAP (yet): "
            "LANG, QUERY and REQUEST=doQuery are TAP parameters. Find images with SIA 2 at "
            "/query, then cut them here with ID and CIRCLE, POLYGON or POS")


def parse_sync_request(params: Params) -> SyncRequest:
    """Validate the SODA parameters of a sync request (raises DALIError subclasses)."""
    refuse_tap(params)
    ids = tuple(value.strip() for value in params.get_all("ID"))
    if not ids:
        raise UsageError("ID is missing; give the publisher DID of an image, as listed by "
                         "/query (obs_publisher_did) or /links")
    regions: list[Shape] = []
    for name, value in params.pairs:
        if name == "CIRCLE":
            regions.append(parse_circle(value))
        elif name == "POLYGON":
            regions.append(parse_polygon(value))
        elif name == "POS":
            regions.append(parse_pos(value))
    band_text, time_text = _single(params, "BAND"), _single(params, "TIME")
    band = parse_interval("BAND", band_text) if band_text else None
    time = parse_interval("TIME", time_text) if time_text else None
    pol_values = [label.strip().upper() for value in params.get_all("POL")
                  for label in value.split()]
    for label in pol_values:
        if label not in POL_LABELS:
            raise UsageError(f"POL: {label!r} is not a polarization state; use one of "
                             + " ".join(POL_LABELS))
    pol = tuple(sorted(set(pol_values))) if pol_values else None
    if not regions and band is None and time is None and pol is None:
        raise UsageError("give CIRCLE, POLYGON or POS (or BAND, TIME, POL) to say which part "
                         "of the image to cut; the whole file is linked from /links (#this)")
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
    request = SyncRequest(ids, tuple(regions), band, time, pol, response_format, preview,
                          params.get_single("RUNID"))
    if request.cutout_count > MAX_SYNC_CUTOUTS:
        raise UsageError(f"{request.cutout_count} cutouts (ID x region) in one sync request, "
                         f"more than {MAX_SYNC_CUTOUTS}; split it or use /async")
    return request


# ---------------------------------------------------------------------------------------
# Computing a product (runs in a worker thread)


def _check_band(request: SyncRequest, record: ImageRecord) -> None:
    """BAND outside the band of a 2-D image is a usage error, like BAND outside a cube.

    The engine selects channels of cubes itself (converting the cube's spectral frame to
    barycentric wavelength) and ignores BAND on images; for those the index's em_min/em_max
    decide. An image without a known band lets any BAND pass.
    """
    if (request.band is None or len(record.shape) > 2 or record.em_min is None
            or record.em_max is None):
        return
    low, high = request.band
    if high < record.em_min or low > record.em_max:
        raise UsageError(
            f"BAND {low:.6g} {high:.6g} m is outside the image's spectral range "
            f"[{record.em_min:.6g}, {record.em_max:.6g}] m of {record.obs_publisher_did}")


IMAGES = OpenImagePool()


def changed_since_indexed(record: ImageRecord) -> bool:
    """Whether the file's size or mtime differ from what the index recorded.

    A changed file that reads well is cut from its new content (the engine takes the WCS
    from the file, and the cache key from its identity now); one that fails to read is a
    transient ServiceUnavailable until it is re-indexed, not a bug.
    """
    try:
        stat = os.stat(record.path)
    except OSError:
        return True
    return bool(record.file_size) and (stat.st_size != record.file_size
                                       or abs(stat.st_mtime - record.mtime) > 1e-3)


def cut_record(request: SyncRequest, record: ImageRecord, max_pixels: int
               ) -> list[CutoutResult]:
    """Every requested region cut from one image (input order); usage problems raise."""
    _check_band(request, record)
    regions = list(request.regions) or [EVERYWHERE]
    try:
        with IMAGES.image(record.path, record.hdu) as image:
            results = sorted(iter_cutouts(
                image, regions, band=request.band, time=request.time,
                pol=list(request.pol) if request.pol else None, max_pixels=max_pixels,
                origfile=record.path.name), key=lambda result: result.index)
    except CutoutError as exc:
        raise UsageError(f"{record.obs_publisher_did}: {exc}") from exc
    except FileNotFoundError as exc:
        raise NotFound(f"the file of {record.obs_publisher_did} is no longer available; "
                       "the archive index needs a refresh") from exc
    except Exception as exc:
        if changed_since_indexed(record):  # e.g. truncated by a copy in progress
            raise ServiceUnavailable(
                f"the file of {record.obs_publisher_did} changed on disk after it was "
                f"indexed and cannot be read now ({type(exc).__name__}); the archive index "
                "must be refreshed (vo-service index)", retry_after=60) from exc
        raise
    for result in results:  # a region off the image is 204; a filter selecting nothing is 400
        if result.status == "error" or (result.status == "no-overlap"
                                        and result.reason != "spatial"):
            raise UsageError(f"{record.obs_publisher_did}: {result.message}")
    return results


def planned_bytes(request: SyncRequest, records: list[ImageRecord], max_pixels: int) -> int:
    """The working memory the answer will need, from the pixel boxes planned on each image
    (no pixel is read). An image that cannot be planned counts 0: cutting it raises the
    error the client should see."""
    regions = list(request.regions) or [EVERYWHERE]
    raw_bytes = pixels = 0
    for record in records:
        try:
            with IMAGES.image(record.path, record.hdu) as image:
                plans = plan_cutouts(image, regions, band=request.band, time=request.time,
                                     pol=list(request.pol) if request.pol else None,
                                     max_pixels=max_pixels)
                itemsize = image.dtype.itemsize
        except Exception:  # noqa: BLE001 - cut_record raises it again, classified for the client
            continue
        boxes = sum(plan.read_box.size for plan in plans if plan.read_box is not None)
        pixels += boxes
        raw_bytes += boxes * itemsize
    return working_bytes(raw_bytes, pixels, preview=request.preview is not None)


def make_product(request: SyncRequest, records: list[ImageRecord], max_pixels: int,
                 hold: Hold | None = None) -> bytes:
    """The bytes of the response: FITS (one stamp, or a multi-extension file) or a preview.

    With ``hold``, the memory the cutting needs is reserved first (ServiceUnavailable when
    the sync memory budget has not enough left). Raises NoOverlap when no region overlaps
    any image.
    """
    if hold is not None:
        hold.reserve(planned_bytes(request, records, max_pixels))
    outcomes = [(record, result) for record in records
                for result in cut_record(request, record, max_pixels)]
    stamps = [result for _, result in outcomes if result.has_stamp]
    if not stamps:
        raise NoOverlap()
    if request.preview is not None:
        return request.preview.render(stamps[0].hdu.data)
    if request.cutout_count == 1:
        return stamps[0].fits_bytes()
    return multi_extension_file(request, outcomes)


def multi_extension_file(request: SyncRequest,
                         outcomes: list[tuple[ImageRecord, CutoutResult]]) -> bytes:
    """One FITS file: a primary HDU listing every ID x region, then one extension
    ``CUTOUT<n>`` per combination that overlaps (astrocut's single_outfile layout)."""
    regions = list(request.regions) or [EVERYWHERE]
    cards = [card("NCUTOUT", sum(r.has_stamp for _, r in outcomes), "image extensions")]
    names: dict[int, str] = {}
    for record, result in outcomes:
        what = f"{record.obs_publisher_did} {describe_region(regions[result.index])}"
        if result.has_stamp:
            names[id(result)] = f"CUTOUT{len(names) + 1}"
            cards.append(history_cards(f"{names[id(result)]}: {what}"))
        else:
            cards.append(history_cards(f"no overlap: {what}"))
    stamps = [result for _, result in outcomes if result.has_stamp]
    chunks = multi_extension_chunks(stamps, extname=lambda stamp: names[id(stamp)])
    next(chunks)  # the engine's bare primary header, replaced by one that lists the cutouts
    return empty_primary_bytes(cards) + b"".join(chunks)


def product_key(request: SyncRequest, records: list[ImageRecord]) -> str:
    """Cache key: the sources as they are on disk now, the canonical request and format."""
    try:
        sources = [source_identity(record.path, record.hdu) for record in records]
    except FileNotFoundError as exc:
        raise NotFound(f"a file of {', '.join(request.ids)} is no longer available; the "
                       "archive index needs a refresh") from exc
    return make_key({
        "product": "soda-sync", "version": KEY_VERSION, "sources": sources,
        "regions": [describe_region(region) for region in request.regions],
        "band": request.band, "time": request.time, "pol": request.pol,
        "format": request.response_format.mime,
        "preview": request.preview.cache_key() if request.preview else None,
    })


def fetch_product(cache: CutoutCache, request: SyncRequest, records: list[ImageRecord],
                  max_pixels: int, hold: Hold | None = None) -> tuple[CachedFile, bool, str]:
    """The cached product (computed on a miss, within ``hold``'s memory): open file, hit
    flag, key."""
    key = product_key(request, records)
    compute: Callable[[], bytes] = partial(make_product, request, records, max_pixels, hold)
    cached, hit = cache.open_or_compute(key, compute)
    return cached, hit, key


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


def download_name(request: SyncRequest, records: list[ImageRecord], key: str) -> str:
    """A file name saying what the product is: ``<source stem>_cutout_<key8>.<ext>``."""
    extension = {"image/png": "png", "image/jpeg": "jpg", VOTABLE_MIME: "xml"}.get(
        request.response_format.mime, "fits")
    if len(records) == 1:
        stem = records[0].path.name.split(".")[0]
        if records[0].extname or records[0].hdu:
            stem += f"_{records[0].extname or records[0].hdu}"
    else:
        stem = f"{len(records)}images"
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("_") or "image"
    suffix = "cutout" if request.cutout_count == 1 else f"{request.cutout_count}cutouts"
    return f"{stem}_{suffix}_{key[:8]}.{extension}"


def lookup_records(index: object, ids: tuple[str, ...]) -> list[ImageRecord]:
    """The index records of ``ids`` in request order; an unknown ID is a 404 UsageError."""
    records = []
    for did in ids:
        record = index.get(did)  # type: ignore[attr-defined]
        if record is None:
            raise NotFound(f"ID {did!r} is not in this archive; find IDs with /query "
                           "(obs_publisher_did)")
        records.append(record)
    return records


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


def _answer(index: object, cache: CutoutCache, request: SyncRequest, max_pixels: int,
            budget: MemoryBudget, options: ProductOptions | None = None) -> _Answer:
    """Everything blocking of one request, in one worker-thread hop: lookup, cache, read."""
    records = lookup_records(index, request.ids)
    try:  # a PSF or a catalog: answered for the region's target, not cut
        special = is_product_request(records)
        if special:
            cached, hit, key = fetch_product_answer(cache, index, records[0], request.regions,
                                                    request.response_format.mime,
                                                    options or ProductOptions(), max_pixels)
    except ProductError as exc:
        raise UsageError(str(exc)) from exc
    except NoProductOverlap as exc:
        raise NoOverlap() from exc
    if special:
        content = None
        if cached.size <= INLINE_BYTES:
            with cached:
                content = cached.handle.read()
        return _Answer(records, cached, hit, key, content)
    if request.response_format.mime == VOTABLE_MIME:
        raise UsageError("RESPONSEFORMAT VOTable is for catalog products; an image is cut "
                         "as application/fits, image/png or image/jpeg")
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
    sync_request = parse_sync_request(params)
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
