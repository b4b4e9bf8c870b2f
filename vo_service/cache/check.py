"""Consistency check of a cutout cache (``vo-service check``, tests after a crash).

A cache is consistent when every index row has its file with the recorded size and sha256,
every file under ``objects/`` has an index row, and the running totals equal the sum of the
rows. :func:`check_cache` repairs what it finds: damaged or missing entries are dropped
(they will be recomputed, never served), stray and half-written files are deleted and the
totals recomputed.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

from vo_service.cache import CutoutCache, _hash_handle
from vo_service.cache.index import _TABLE, _TOTALS


@dataclass
class CacheCheck:
    """What :func:`check_cache` found and repaired."""

    entries: int = 0
    verified: int = 0
    dropped: list[str] = field(default_factory=list)  # keys whose file was missing/damaged
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
    rows = list(cache._db().execute(f"SELECT key, size, sha256 FROM {_TABLE}"))
    report.entries = len(rows)
    for key, size, digest in rows:
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
    known = {row[0] for row in rows} - set(report.dropped)
    cutoff = time.time() + 1 if min_age_seconds <= 0 else time.time() - min_age_seconds
    for directory in filter(os.path.isdir, cache.objects_dir.iterdir()):
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name not in known and entry.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                            report.strays_removed += 1
    with cache._write() as db:
        total, count = db.execute(
            f"SELECT COALESCE(SUM(size), 0), COUNT(*) FROM {_TABLE}").fetchone()
        recorded = db.execute(f"SELECT bytes, entries FROM {_TOTALS} WHERE id = 1").fetchone()
        if tuple(recorded) != (total, count):
            db.execute(f"UPDATE {_TOTALS} SET bytes = ?, entries = ? WHERE id = 1",
                       [total, count])
            report.totals_fixed = True
    return report
