"""The SQLite index of the cutout cache: one row per file, a logical LRU clock, totals.

Each row records a file's size and sha256 and when it was last used (``used_seq``, a
logical clock); a one-row table of totals, kept by triggers in the same transaction as every
insert, update and delete, lets a put check the byte budget without summing every entry.
Writes are ``BEGIN IMMEDIATE`` transactions on one connection per thread (WAL mode,
sqlite-utils), so several threads and processes can share one cache directory. The threads
of one process take turns at writing on a lock of their own first: SQLite's busy handler
would make a thread that finds the database locked sleep for milliseconds at a time (the
threads of a catalog job write after every unit of work, and spent most of their
bookkeeping time asleep so); other processes still wait through ``busy_timeout``. The files
themselves are :class:`vo_service.cache.CutoutCache`'s business.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import sqlite_utils

_TABLE = "entries"
_TOTALS = "totals"
# The running totals follow every change of ``entries`` inside the changing transaction.
_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS {_TABLE}_added AFTER INSERT ON {_TABLE} BEGIN "
    f"UPDATE {_TOTALS} SET bytes = bytes + NEW.size, entries = entries + 1 WHERE id = 1; END",
    f"CREATE TRIGGER IF NOT EXISTS {_TABLE}_removed AFTER DELETE ON {_TABLE} BEGIN "
    f"UPDATE {_TOTALS} SET bytes = bytes - OLD.size, entries = entries - 1 WHERE id = 1; END",
    f"CREATE TRIGGER IF NOT EXISTS {_TABLE}_resized AFTER UPDATE OF size ON {_TABLE} BEGIN "
    f"UPDATE {_TOTALS} SET bytes = bytes - OLD.size + NEW.size WHERE id = 1; END",
)


# One write lock per index file in this process, shared by every CacheIndex of that file.
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.RLock:
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(str(path.resolve()), threading.RLock())


class CacheIndex:
    """The index database at ``path`` (created with its schema if needed)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._writing = _write_lock(self.path)
        self._create_schema()

    def db(self) -> sqlite_utils.Database:
        """One connection per thread, autocommit, explicit transactions."""
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 60000")
            db = sqlite_utils.Database(conn)
            if db.journal_mode != "wal":
                db.enable_wal()
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction that takes the lock up front (no upgrade deadlocks), after
        this process's other threads' (see the module's docstring)."""
        db = self.db()
        with self._writing:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.conn.in_transaction:  # SQLite already rolled back after "disk is full"
                    db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")

    def _create_schema(self) -> None:
        with self.write() as db:
            if _TABLE not in db.table_names():
                db[_TABLE].create(
                    {
                        "key": str,
                        "size": int,
                        "sha256": str,
                        "created_at": float,
                        "used_at": float,
                        "used_seq": int,
                        "hits": int,
                    },
                    pk="key",
                )
                db[_TABLE].create_index(["used_seq"])
            if _TOTALS not in db.table_names():  # new cache, or one made before the totals
                db.execute(f"CREATE TABLE {_TOTALS} (id INTEGER PRIMARY KEY CHECK (id = 1), "
                           "bytes INTEGER NOT NULL, entries INTEGER NOT NULL)")
                db.execute(f"INSERT INTO {_TOTALS} SELECT 1, COALESCE(SUM(size), 0), COUNT(*) "
                           f"FROM {_TABLE}")
            for trigger in _TRIGGERS:
                db.execute(trigger)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def row(self, key: str) -> dict | None:
        """The entry of ``key`` (size, sha256, times, hits), or None."""
        rows = list(self.db().query(f"SELECT * FROM {_TABLE} WHERE key = ?", [key]))
        return rows[0] if rows else None

    def rows(self, keys: list[str]) -> dict[str, dict]:
        """The entries of those ``keys`` that exist, by key (one query per 500 keys)."""
        found: dict[str, dict] = {}
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            marks = ", ".join("?" * len(part))
            for row in self.db().query(f"SELECT * FROM {_TABLE} WHERE key IN ({marks})", part):
                found[row["key"]] = row
        return found

    def touch(self, key: str) -> None:
        """Mark ``key`` used now (most recent in the eviction order)."""
        self.touch_many([key])

    def touch_many(self, keys: list[str]) -> None:
        """Mark ``keys`` used now, in this order, in one transaction."""
        if not keys:
            return
        now = time.time()
        with self.write() as db:
            db.conn.executemany(
                f"UPDATE {_TABLE} SET used_at = ?, hits = hits + 1, "
                f"used_seq = (SELECT COALESCE(MAX(used_seq), 0) + 1 FROM {_TABLE}) "
                "WHERE key = ?",
                [(now, key) for key in keys],
            )

    def forget(self, key: str, *, expected_sha256: str) -> None:
        """Delete the entry of ``key`` unless another writer has replaced it meanwhile."""
        with self.write() as db:
            db.execute(
                f"DELETE FROM {_TABLE} WHERE key = ? AND sha256 = ?", [key, expected_sha256]
            )

    def record(self, key: str, size: int, sha256: str) -> None:
        """Record (or replace) the entry of a file just written, as the most recent."""
        self.record_many([(key, size, sha256)])

    def record_many(self, entries: list[tuple[str, int, str]]) -> None:
        """Record (or replace) entries (key, size, sha256) of files just written, in this
        order as the most recent, in one transaction."""
        if not entries:
            return
        now = time.time()
        with self.write() as db:
            # An upsert, not INSERT OR REPLACE: REPLACE deletes without firing the triggers.
            db.conn.executemany(
                f"INSERT INTO {_TABLE} "
                "(key, size, sha256, created_at, used_at, used_seq, hits) "
                f"VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(used_seq), 0) + 1 FROM {_TABLE}), 0) "
                "ON CONFLICT(key) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
                "created_at = excluded.created_at, used_at = excluded.used_at, "
                "used_seq = excluded.used_seq, hits = 0",
                [(key, size, sha256, now, now) for key, size, sha256 in entries],
            )

    def evict_over(self, max_bytes: int, keep: str | Collection[str] | None = None, *,
                   spare_bytes: int | None = None) -> list[str]:
        """Delete least recently used entries (never ``keep``: one key or several) until the
        total fits ``max_bytes`` and, if given, ``spare_bytes`` more would still fit on the
        disk (negative: that many bytes must go); return their keys, whose files the caller
        removes.

        The total is the running one (one row), so a put within budget costs O(1), and an
        eviction reads only as many entries, oldest first, as it removes.
        """
        with self.write() as db:
            total = int(db.execute(f"SELECT bytes FROM {_TOTALS} WHERE id = 1").fetchone()[0])
            if spare_bytes is not None:
                max_bytes = min(max_bytes, total + spare_bytes)
            if total <= max_bytes:
                return []
            kept = {keep} if isinstance(keep, str) else set(keep or ())
            victims: list[str] = []
            cursor = db.conn.execute(f"SELECT key, size FROM {_TABLE} ORDER BY used_seq ASC")
            for key, size in cursor:
                if total <= max_bytes:
                    break
                if key in kept:
                    continue
                victims.append(key)
                total -= size
            cursor.close()
            db.conn.executemany(f"DELETE FROM {_TABLE} WHERE key = ?", [(k,) for k in victims])
        return victims

    def keys(self) -> set[str]:
        """Every key the index knows."""
        return {row[0] for row in self.db().execute(f"SELECT key FROM {_TABLE}")}

    def totals(self) -> tuple[int, int]:
        """(bytes, entries): the running totals."""
        total, count = self.db().execute(
            f"SELECT bytes, entries FROM {_TOTALS} WHERE id = 1").fetchone()
        return int(total), int(count)

    def keys_by_recency(self) -> list[str]:
        """Keys from least to most recently used (the eviction order)."""
        return [r[0] for r in self.db().execute(f"SELECT key FROM {_TABLE} ORDER BY used_seq")]

    def clear(self) -> None:
        """Forget every entry."""
        with self.write() as db:
            db.execute(f"DELETE FROM {_TABLE}")
