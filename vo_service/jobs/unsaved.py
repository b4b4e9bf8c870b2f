"""Job changes a full disk refused: kept in memory, shown as if written, written later.

A job that fails because the disk is full must still end in ERROR, an ABORT must stop it
and a DELETE must make it disappear, even when SQLite cannot write a page. A write that
fails for lack of space is tried once more after deleting the space reserve
(:mod:`vo_service.jobs.reserve`); a final phase or a deletion that still fails is kept here,
applied by the job store to every row it reads, and written by :meth:`UnsavedChanges.flush`
once the disk has room.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

from vo_service.errors import out_of_space, storage_failure
from vo_service.jobs.reserve import SpaceReserve

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# (job id, columns to write or None to delete the job) -> None
Apply = Callable[[str, "dict[str, object] | None"], None]


class UnsavedChanges:
    """Per job: the columns to write (``phase`` always among them), or None (deleted).

    ``apply`` writes one such change to the database; ``reserve`` is released once when a
    write finds the disk full.
    """

    def __init__(self, apply: Apply, reserve: SpaceReserve | None = None) -> None:
        self._apply = apply
        self.reserve = reserve
        self._changes: dict[str, dict[str, object] | None] = {}
        self._lock = threading.RLock()

    # -- writing --------------------------------------------------------------------------

    def with_reserve(self, write: Callable[[], _T]) -> _T:
        """``write()``; on a full disk, once more after deleting the space reserve."""
        try:
            return write()
        except sqlite3.OperationalError as exc:
            if not (out_of_space(exc) and self.reserve is not None and self.reserve.release()):
                raise
        return write()

    def write_or_keep(self, job_id: str, changes: dict[str, object] | None) -> None:
        """Write a job's final columns (None: delete it), or keep them if the disk fails."""
        with self._lock:
            try:
                self.with_reserve(lambda: self._apply(job_id, changes))
            except sqlite3.OperationalError as exc:
                if storage_failure(exc) is None:
                    raise
                self.keep(job_id, changes, exc)
            else:
                self._changes.pop(job_id, None)

    def keep(self, job_id: str, changes: dict[str, object] | None, exc: Exception) -> None:
        """Remember ``changes`` (merged with earlier ones) or the deletion; one log line."""
        with self._lock:
            earlier = self._changes.get(job_id)
            self._changes[job_id] = None if changes is None else {**(earlier or {}), **changes}
        what = "deletion" if changes is None else f"phase {changes['phase']}"
        log.warning("job %s: %s kept in memory until the disk has room: %s", job_id, what, exc)

    def flush(self) -> int:
        """Write the kept changes, in order, until the disk refuses one; returns how many
        are still kept."""
        with self._lock:
            for job_id, changes in list(self._changes.items()):
                try:
                    self.with_reserve(lambda: self._apply(job_id, changes))  # noqa: B023
                except sqlite3.OperationalError as exc:
                    if storage_failure(exc) is None:
                        raise
                    break
                del self._changes[job_id]
                log.info("job %s: the change kept in memory is written now", job_id)
            return len(self._changes)

    # -- reading --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._changes)

    def holds(self, job_id: str) -> bool:
        """True if a change of ``job_id`` waits to be written."""
        return job_id in self._changes

    def deleted(self, job_id: str) -> bool:
        """True if the deletion of ``job_id`` waits to be written."""
        return job_id in self._changes and self._changes[job_id] is None

    def changes(self, job_id: str) -> dict[str, object]:
        """The kept columns of a job (empty if none or deleted)."""
        return dict(self._changes.get(job_id) or {})

    def phase(self, job_id: str) -> str | None:
        """The kept phase of a job; None if it is deleted or nothing is kept."""
        changes = self._changes.get(job_id)
        return None if changes is None else str(changes["phase"])

    def applied(self, job_id: str, row: dict[str, object] | None) -> dict[str, object] | None:
        """``row`` as it would read with the kept change written (None: deleted)."""
        if row is None or job_id not in self._changes:
            return row
        changes = self._changes[job_id]
        return None if changes is None else {**row, **changes}
