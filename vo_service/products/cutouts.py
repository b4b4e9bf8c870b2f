"""Making a cutout product: ID -> index record -> planned pixel boxes -> cache -> bytes.

A :class:`~vo_service.products.cutout_request.CutoutRequest` is answered with one FITS
file (one stamp, or a multi-extension file of every ID x region) or a PNG/JPEG preview,
through the cutout cache, so that an identical request is a verified file lookup. The
same function makes the product of ``/sync`` and of each SODA job result
(:func:`fetch_product`), so both give the same bytes and share the cache. Problems the
client can fix raise the DALI errors of :mod:`vo_service.errors`; no region overlapping any
image raises :class:`NoOverlap` (``/sync`` answers 204, a job writes a text result).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from functools import partial

from vo_service.archive.records import ImageRecord
from vo_service.cache import CachedFile, CutoutCache, make_key, source_identity
from vo_service.engine.batch import iter_cutouts, multi_extension_chunks
from vo_service.engine.cutout import CutoutResult, describe_region, plan_cutouts
from vo_service.engine.reading import OpenImagePool
from vo_service.engine.spectral import CutoutError
from vo_service.engine.writing import card, empty_primary_bytes, history_cards
from vo_service.errors import NotFound, ServiceUnavailable, UsageError
from vo_service.products import stitching
from vo_service.products.cutout_request import CutoutRequest
from vo_service.products.memory import Hold, working_bytes
from vo_service.shapes import Range

KEY_VERSION = 2  # bump when the bytes of a product change for the same request
# 2: tight boxes for CIRCLE/POLYGON/RANGE; lookup-table EXTVERs renumbered per extension
EVERYWHERE = Range(-math.inf, math.inf, -math.inf, math.inf)


class NoOverlap(Exception):
    """No requested region overlaps any requested image: SODA answers 204."""


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


def _check_band(request: CutoutRequest, record: ImageRecord) -> None:
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


def cut_record(request: CutoutRequest, record: ImageRecord, max_pixels: int
               ) -> list[CutoutResult]:
    """Every requested region cut from one image (input order); usage problems raise."""
    _check_band(request, record)
    regions = list(request.regions) or [EVERYWHERE]
    try:
        with IMAGES.image(record.path, record.hdu) as image:
            if request.stitch is not None:
                results = stitching.cut_stitched(
                    IMAGES, image, record, request.stitch.of(record), regions,
                    method=request.stitch.method, max_pixels=max_pixels, band=request.band,
                    time=request.time, pol=list(request.pol) if request.pol else None)
            else:
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


def planned_bytes(request: CutoutRequest, records: list[ImageRecord], max_pixels: int) -> int:
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
                                     max_pixels=max_pixels, pad=request.stitch is not None)
                itemsize = image.dtype.itemsize
        except Exception:  # noqa: BLE001 - cut_record raises it again, classified for the client
            continue
        boxes = sum((plan.box if request.stitch else plan.read_box).size for plan in plans
                    if plan.read_box is not None)
        pixels += boxes
        raw_bytes += boxes * itemsize
    return working_bytes(raw_bytes, pixels, preview=request.preview is not None)


def make_product(request: CutoutRequest, records: list[ImageRecord], max_pixels: int,
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


def multi_extension_file(request: CutoutRequest,
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


def product_key(request: CutoutRequest, records: list[ImageRecord]) -> str:
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
        **({"stitch": request.stitch.key()} if request.stitch else {}),
    })


def fetch_product(cache: CutoutCache, request: CutoutRequest, records: list[ImageRecord],
                  max_pixels: int, hold: Hold | None = None) -> tuple[CachedFile, bool, str]:
    """The cached product (computed on a miss, within ``hold``'s memory): open file, hit
    flag, key."""
    key = product_key(request, records)
    compute: Callable[[], bytes] = partial(make_product, request, records, max_pixels, hold)
    cached, hit = cache.open_or_compute(key, compute)
    return cached, hit, key


def download_name(request: CutoutRequest, records: list[ImageRecord], key: str) -> str:
    """A file name saying what the product is: ``<source stem>_cutout_<key8>.<ext>``."""
    extension = {"image/png": "png", "image/jpeg": "jpg",
                 "application/x-votable+xml": "xml"}.get(request.response_format.mime, "fits")
    if len(records) == 1:
        stem = records[0].path.name.split(".")[0]
        if records[0].extname or records[0].hdu:
            stem += f"_{records[0].extname or records[0].hdu}"
    else:
        stem = f"{len(records)}images"
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("_") or "image"
    suffix = "cutout" if request.cutout_count == 1 else f"{request.cutout_count}cutouts"
    return f"{stem}_{suffix}_{key[:8]}.{extension}"
