"""The ZIP bundle of a catalog job, filled by the units that cut its stamps.

On the local pool, whose threads share the bundle's file system, a unit appends its
stamps to the bundle itself (:class:`vo_service.engine.bundle.ZipAppender`, one O_APPEND
write per few members) and the job's coordinating thread only adopts the entries. On Dask
workers anywhere, a unit writes its stamps into a part file (ZIP local records only, see
:meth:`vo_service.engine.bundle.ZipStream.close_part`) in the job folder, which the
coordinator appends to the bundle with one in-kernel copy. Either way each stamp is
written once into the job, and the job serves it from the bundle (stamps are stored
uncompressed, so a stamp is one byte range of the ZIP). A unit appending to the bundle
also caches its new stamps where they lie in it (the bundle hard-linked into the cutout
cache): no second copy of their bytes.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vo_service.engine.bundle import ZipAppender, ZipStream
from vo_service.jobs.batch_cut import Outcome, StampTask, cut_task
from vo_service.jobs.unit_rows import manifest_row
from vo_service.products.manifest import ManifestRow, render_rows

PARTS_FOLDER = "bundle-parts"


@dataclass
class PackedTask:
    """The outcomes of one unit and where its stamps went: a bundle part (``part``, with
    ``entries`` at offsets in the part), or the bundle itself (``part`` None, ``entries``
    at offsets in the bundle); and the outcomes' manifest rows and their ``<TR>`` texts
    (None unless asked for)."""

    outcomes: list[Outcome]
    part: str | None = None
    entries: list[tuple[bytes, int, int, int]] = field(default_factory=list)
    rows: list[ManifestRow] | None = None
    texts: list[str] | None = None


def cut_and_pack(task: StampTask, cache, memory, formats: tuple[str, ...], max_pixels: int,
                 job_dir: Path, append_to: Path | None = None,
                 job_url: str | None = None) -> PackedTask:
    """:func:`vo_service.jobs.batch_cut.cut_task` with its stamps appended to the bundle
    file ``append_to`` (same machine as the coordinator), or else written into a new part
    in ``job_dir``; with ``job_url`` (where the job is served), the outcomes' manifest
    rows made and rendered too (:mod:`vo_service.jobs.unit_rows`)."""
    packed = _cut_and_pack(task, cache, memory, formats, max_pixels, job_dir, append_to)
    if job_url is not None:
        packed.rows = [manifest_row(task.record, outcome, job_url)
                       for outcome in packed.outcomes]
        packed.texts = render_rows(packed.rows)
    return packed


def _cut_and_pack(task: StampTask, cache, memory, formats: tuple[str, ...],
                  max_pixels: int, job_dir: Path, append_to: Path | None) -> PackedTask:
    if append_to is not None:
        appender = ZipAppender(append_to)
        try:
            outcomes = cut_task(task, cache, memory, formats, max_pixels, appender,
                                append_to)
        except BaseException:  # its bytes stay unlisted in the ZIP; its own error tells why
            with contextlib.suppress(OSError):  # e.g. the same full disk
                appender.close()
            raise
        entries = appender.close()
        return PackedTask(outcomes, None, entries)
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
    if not entries:
        path.unlink(missing_ok=True)
        return PackedTask(outcomes)
    return PackedTask(outcomes, str(path), entries)
