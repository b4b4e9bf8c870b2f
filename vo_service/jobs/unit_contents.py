"""A unit's table of contents in the cutout cache: a catalog run again reads units whole.

A unit of a catalog job (one image, up to 256 targets) that met none of its targets
before cuts them all and stores their stamps in one cache pack: the job's bundle linked
into the cache, or a pack of copies. With them it stores this table: the pack, and for
each target, in the unit's order, its outcome (status, message, pixel box) and where its
stamps lie in the pack (format, offset, size, CRC-32). The table's
key names everything that makes the unit's bytes (the image on disk, the targets in order,
formats, limits), so the same unit met again (the same catalog, run again) needs one
lookup instead of one per target for its outcome and one per stamp, and reads its stamps
in one piece. Anything amiss (the table evicted, a stamp that fails its CRC) sends the unit
the usual way, target by target, which drops what is damaged and cuts it again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from vo_service.engine.cutout import StampStatus
from vo_service.jobs.outcome_memo import PixelRanges, decode_ranges, encode_ranges

# Bump when the table's layout or meaning changes (old tables are then not looked up).
CONTENTS_VERSION = 2  # 2: the pack is named (a job's bundle, linked)
_STATUSES = {str(status): status for status in StampStatus}


@dataclass(frozen=True, slots=True)
class UnitEntry:
    """One target of a unit: its outcome, and its stamps in the pack as (format, offset,
    size, crc32)."""

    status: StampStatus
    message: str
    ranges: PixelRanges | None
    stamps: tuple[tuple[str, int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class UnitContents:
    """A unit's table: the pack holding its stamps (None: the pack of the table itself)
    and its targets' entries in the unit's order."""

    pack: str | None
    entries: list[UnitEntry]


def contents_bytes(entries: Sequence[UnitEntry], pack: str | None = None) -> bytes:
    """The table of a unit's ``entries`` (in the unit's order) whose stamps lie in
    ``pack`` (None: the table's own pack), as stored."""
    return json.dumps({"pack": pack, "entries": [
        [str(entry.status), entry.message, encode_ranges(entry.ranges),
         [list(stamp) for stamp in entry.stamps]] for entry in entries]},
        separators=(",", ":")).encode()


def read_contents(content: bytes, count: int) -> UnitContents | None:
    """A stored table, or None unless it holds ``count`` well-formed entries (the caller
    then goes target by target)."""
    try:
        table = json.loads(content)
        rows, pack = table["entries"], table["pack"]
        if not isinstance(rows, list) or len(rows) != count or \
                not (pack is None or isinstance(pack, str)):
            return None
        return UnitContents(pack, [
            UnitEntry(_STATUSES[status], str(message), decode_ranges(ranges),
                      tuple((str(fmt), int(offset), int(size), int(crc))
                            for fmt, offset, size, crc in stamps))
            for status, message, ranges, stamps in rows])
    except (KeyError, TypeError, ValueError):  # not a table this version wrote
        return None
