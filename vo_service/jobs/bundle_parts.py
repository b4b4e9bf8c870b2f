"""The ZIP bundle of a catalog job, filled by the units that cut its stamps.

On the local pool, whose threads share the bundle's file system, a unit appends its
stamps to the bundle itself (:class:`vo_service.engine.bundle.ZipAppender`, one O_APPEND
write per few members) and the job's coordinating thread only adopts the entries. On Dask
workers anywhere, a unit writes its stamps into a part file (ZIP local records only, see
:meth:`vo_service.engine.bundle.ZipStream.close_part`) in the job folder, which the
coordinator appends to the bundle with one in-kernel copy. Either way each stamp is
written once into the job, and the job serves it from the bundle (stamps are stored
uncompressed, so a stamp is one byte range of the ZIP).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vo_service.cache import CutoutCache, make_key, source_identity
from vo_service.engine.bundle import ZipAppender, ZipStream
from vo_service.jobs.batch_cut import Outcome, StampTask, cut_task
from vo_service.jobs.job_coverage import STAMP_STATUSES, unit_coverage
from vo_service.products.manifest import format_pixel_box

log = logging.getLogger(__name__)

PARTS_FOLDER = "bundle-parts"
# Bump when unit_coverage draws other cells for the same stamps (old entries are unused).
COVERAGE_KEY_VERSION = 1


@dataclass
class PackedTask:
    """The outcomes of one unit and where its stamps went: a bundle part (``part``, with
    ``entries`` at offsets in the part), or the bundle itself (``part`` None, ``entries``
    at offsets in the bundle); and the MOC of its stamps (``coverage``, depth-29 ranges;
    None if not asked for or not drawn)."""

    outcomes: list[Outcome]
    part: str | None = None
    entries: list[tuple[bytes, int, int, int]] = field(default_factory=list)
    coverage: np.ndarray | None = None


def _drawn(task: StampTask, outcomes: list[Outcome], order: int | None,
           cache: CutoutCache) -> np.ndarray | None:
    """The MOC of the unit's stamps at the job's coverage ``order`` (:func:`unit_coverage`),
    or None: not asked for, or it could not be drawn (the job then draws it from its
    manifest). A unit drawn before (same image on disk, order and pixel boxes: a catalog
    run again) is read back from the cache instead of drawn again."""
    if order is None:
        return None
    boxes = [format_pixel_box(outcome.ranges) for outcome in outcomes
             if outcome.ranges and outcome.status in STAMP_STATUSES]
    if not boxes:
        return unit_coverage(task.record, boxes, order)  # empty, at once
    try:
        key = make_key({"product": "unit-coverage", "version": COVERAGE_KEY_VERSION,
                        "source": source_identity(task.record.path, task.record.hdu),
                        "order": order, "boxes": boxes})
        if (cached := cache.open(key)) is not None:
            return np.frombuffer(b"".join(cached.iter_chunks()), dtype=np.uint64).reshape(-1, 2)
        ranges = unit_coverage(task.record, boxes, order)
        cache.put_pack([(key, np.ascontiguousarray(ranges, dtype=np.uint64).tobytes())])
        return ranges
    except OSError:  # the image went away, or a full disk: the job draws it at the end
        log.warning("the coverage of a unit on %s could not be drawn", task.record.path,
                    exc_info=True)
        return None
    except Exception:  # a bug must not cost the unit its stamps
        log.exception("the coverage of a unit on %s could not be drawn", task.record.path)
        return None


def cut_and_pack(task: StampTask, cache, memory, formats: tuple[str, ...], max_pixels: int,
                 job_dir: Path, append_to: Path | None = None,
                 coverage_order: int | None = None) -> PackedTask:
    """:func:`vo_service.jobs.batch_cut.cut_task` with its stamps appended to the bundle
    file ``append_to`` (same machine as the coordinator), or else written into a new part
    in ``job_dir``; with ``coverage_order``, the MOC of its stamps drawn too."""
    if append_to is not None:
        appender = ZipAppender(append_to)
        try:
            outcomes = cut_task(task, cache, memory, formats, max_pixels, appender)
        except BaseException:  # its bytes stay unlisted in the ZIP; its own error tells why
            with contextlib.suppress(OSError):  # e.g. the same full disk
                appender.close()
            raise
        entries = appender.close()
        return PackedTask(outcomes, None, entries, _drawn(task, outcomes, coverage_order, cache))
    folder = job_dir / PARTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.part"  # a retried unit never clashes
    stream = ZipStream(path)
    try:
        outcomes = cut_task(task, cache, memory, formats, max_pixels, stream)
    except BaseException:
        stream.close_part()
        path.unlink(missing_ok=True)
        raise
    entries = stream.close_part()
    coverage = _drawn(task, outcomes, coverage_order, cache)
    if not entries:
        path.unlink(missing_ok=True)
        return PackedTask(outcomes, coverage=coverage)
    return PackedTask(outcomes, str(path), entries, coverage)
