"""ZIP parts of a catalog job's bundle, written by the workers that cut the stamps.

Each unit of work packs its own stamps into a part file (ZIP local records only, see
:meth:`vo_service.engine.bundle.ZipStream.close_part`) next to the job's stamps; the job's
coordinating thread then appends whole parts to the bundle with one in-kernel copy each,
instead of opening, reading, checksumming and writing every stamp itself. Parts are plain
files in the job folder, so this works on Dask workers anywhere. On the local pool, whose
threads share the bundle's file system, a unit appends its stamps to the bundle itself
(:class:`vo_service.engine.bundle.ZipAppender`, one O_APPEND write per few members) and the
coordinator only adopts the entries: the stamps are written once instead of twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vo_service.engine.bundle import ZipAppender, ZipStream
from vo_service.jobs.batch_cut import Outcome, StampTask, cut_task

PARTS_FOLDER = "bundle-parts"


@dataclass
class PackedTask:
    """The outcomes of one unit and the bundle part holding its stamps (None if none, or
    if they were appended to the bundle itself: then ``entries`` hold bundle offsets)."""

    outcomes: list[Outcome]
    part: str | None = None
    entries: list[tuple[bytes, int, int, int]] = field(default_factory=list)


def _stamp_members(outcomes: list[Outcome], stamp_dir: Path) -> Iterator[tuple[str, bytes]]:
    """(path in the bundle, bytes) of every stamp of ``outcomes``, in order."""
    for outcome in outcomes:
        for fmt, (relative, _) in outcome.files.items():
            content = outcome.contents.get(fmt)  # bytes at hand, else the linked file
            yield relative, content if content is not None else (
                stamp_dir / relative).read_bytes()
        outcome.contents.clear()


def pack_stamps(outcomes: list[Outcome], stamp_dir: Path,
                append_to: Path | None = None) -> PackedTask:
    """Write the stamps of ``outcomes`` (in order) into a new part next to ``stamp_dir``,
    or append them to the bundle file ``append_to`` (same machine as the coordinator)."""
    if not any(outcome.files for outcome in outcomes):
        return PackedTask(outcomes)
    if append_to is not None:
        appender = ZipAppender(append_to)
        try:
            for relative, content in _stamp_members(outcomes, stamp_dir):
                appender.add(relative, (content,))
        finally:
            entries = appender.close()  # bytes of a failed unit stay unlisted in the ZIP
        return PackedTask(outcomes, None, entries)
    folder = stamp_dir.parent / PARTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.part"  # a retried unit never clashes
    stream = ZipStream(path)
    try:
        for relative, content in _stamp_members(outcomes, stamp_dir):
            stream.add(relative, (content,))
    except BaseException:
        stream.close_part()
        path.unlink(missing_ok=True)
        raise
    return PackedTask(outcomes, str(path), stream.close_part())


def cut_and_pack(task: StampTask, cache, memory, formats: tuple[str, ...], max_pixels: int,
                 stamp_dir: Path, append_to: Path | None = None) -> PackedTask:
    """:func:`vo_service.jobs.batch_cut.cut_task`, then its stamps packed as a part (or
    appended to the bundle ``append_to``)."""
    outcomes = cut_task(task, cache, memory, formats, max_pixels, stamp_dir)
    return pack_stamps(outcomes, stamp_dir, append_to)
