"""ZIP parts of a catalog job's bundle, written by the workers that cut the stamps.

Each unit of work packs its own stamps into a part file (ZIP local records only, see
:meth:`vo_service.engine.bundle.ZipStream.close_part`) next to the job's stamps; the job's
coordinating thread then appends whole parts to the bundle with one in-kernel copy each,
instead of opening, reading, checksumming and writing every stamp itself. Parts are plain
files in the job folder, so this works the same on the local pool and on Dask workers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vo_service.engine.bundle import ZipStream
from vo_service.jobs.batch_cut import Outcome, StampTask, cut_task

PARTS_FOLDER = "bundle-parts"


@dataclass
class PackedTask:
    """The outcomes of one unit and the bundle part holding its stamps (None if none)."""

    outcomes: list[Outcome]
    part: str | None = None
    entries: list[tuple[bytes, int, int, int]] = field(default_factory=list)


def pack_stamps(outcomes: list[Outcome], stamp_dir: Path) -> PackedTask:
    """Write the stamps of ``outcomes`` (in order) into a new part next to ``stamp_dir``."""
    if not any(outcome.files for outcome in outcomes):
        return PackedTask(outcomes)
    folder = stamp_dir.parent / PARTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.part"  # a retried unit never clashes
    stream = ZipStream(path)
    try:
        for outcome in outcomes:
            for fmt, (relative, _) in outcome.files.items():
                content = outcome.contents.get(fmt)  # bytes at hand, else the linked file
                if content is None:
                    content = (stamp_dir / relative).read_bytes()
                stream.add(relative, (content,))
            outcome.contents.clear()
    except BaseException:
        stream.close_part()
        path.unlink(missing_ok=True)
        raise
    return PackedTask(outcomes, str(path), stream.close_part())


def cut_and_pack(task: StampTask, cache, memory, formats: tuple[str, ...], max_pixels: int,
                 stamp_dir: Path) -> PackedTask:
    """:func:`vo_service.jobs.batch_cut.cut_task`, then its stamps packed as a part."""
    outcomes = cut_task(task, cache, memory, formats, max_pixels, stamp_dir)
    return pack_stamps(outcomes, stamp_dir)
