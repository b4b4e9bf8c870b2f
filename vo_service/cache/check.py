"""Consistency check of a cutout cache (``vo-service check``, tests after a crash).

A cache is consistent when every index row has its bytes with the recorded size and
checksum (an own file under ``objects/`` and its sha256, or a range of a pack file under
``packs/`` and its CRC-32), every file under ``objects/`` and ``packs/`` has an index row
referring to it, and the running totals equal the sum of the rows. :func:`check_cache`
repairs what it finds: damaged or missing entries are dropped (they will be recomputed,
never served), a pack no row refers to any more is deleted with them, stray and
half-written files are deleted and the totals recomputed.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

from vo_service.cache import CutoutCache, _crc_range, _hash_handle, remove_strays
from vo_service.cache.index import _TABLE, _TOTALS


@dataclass
class CacheCheck:
    """What :func:`check_cache` found and repaired."""

    entries: int = 0
    verified: int = 0
    dropped: list[str] = field(default_factory=list)  # keys whose bytes were missing/damaged
    strays_removed: int = 0
    totals_fixed: bool = False

    @property
    def consistent(self) -> bool:
        """True when nothing needed repairing."""
        return not self.dropped and not self.strays_removed and not self.totals_fixed

    def summary(self) -> str:
        return (f"cache: {self.entries} entries, {self.verified} verified, "
                f"{len(self.dropped)} dropped (missing or damaged), {self.strays_removed} "
                f"stray files removed, totals {'recomputed' if self.totals_fixed else 'ok'}")


def check_cache(cache: CutoutCache, *, min_age_seconds: float = 0.0) -> CacheCheck:
    """Verify and repair ``cache``; files younger than ``min_age_seconds`` that the index
    does not know are left alone (writes in flight in a running service)."""
    report = CacheCheck()
    rows = list(cache._db().execute(
        f'SELECT key, size, sha256, pack, "offset", crc32 FROM {_TABLE}'))
    report.entries = len(rows)
    packs: dict[str, list[tuple[str, int, int, int | None]]] = {}
    for key, size, digest, pack, offset, crc in rows:
        if pack is not None:
            packs.setdefault(pack, []).append((key, offset, size, crc))
            continue
        try:
            with open(cache.path_for(key), "rb") as handle:
                found = _hash_handle(handle)
        except FileNotFoundError:
            found = None
        if found == (size, digest):
            report.verified += 1
        else:
            cache._drop(key, expected_sha256=digest, unlink=True)
            report.dropped.append(key)
    for pack, members in packs.items():
        damaged = _damaged_members(cache, pack, members)
        report.verified += len(members) - len(damaged)
        if damaged:
            report.dropped.extend(damaged)
            if cache.index.forget_packed(pack, damaged):
                with contextlib.suppress(FileNotFoundError, ValueError):
                    cache.pack_path(pack).unlink()
    cutoff = time.time() + 1 if min_age_seconds <= 0 else time.time() - min_age_seconds
    known = cache.index.own_file_keys()
    for directory in filter(os.path.isdir, cache.objects_dir.iterdir()):
        report.strays_removed += remove_strays(directory, known, cutoff)
    report.strays_removed += remove_strays(cache.packs_dir, cache.index.packs(), cutoff)
    with cache._write() as db:
        total, count = db.execute(
            f"SELECT COALESCE(SUM(size), 0), COUNT(*) FROM {_TABLE}").fetchone()
        recorded = db.execute(f"SELECT bytes, entries FROM {_TOTALS} WHERE id = 1").fetchone()
        if tuple(recorded) != (total, count):
            db.execute(f"UPDATE {_TOTALS} SET bytes = ?, entries = ? WHERE id = 1",
                       [total, count])
            report.totals_fixed = True
    return report


def _damaged_members(cache: CutoutCache, pack: str,
                     members: list[tuple[str, int, int, int | None]]) -> list[str]:
    """The keys of ``members`` (key, offset, size, crc32) of ``pack`` whose bytes are not
    there intact (all of them if the pack file is missing): the check a cache hit makes."""
    try:
        fd = os.open(cache.pack_path(pack), os.O_RDONLY)
    except (FileNotFoundError, ValueError):
        return [key for key, _, _, _ in members]
    try:
        return [key for key, offset, size, crc in sorted(members, key=lambda m: m[1])
                if _crc_range(fd, offset, size) != crc]
    finally:
        os.close(fd)
