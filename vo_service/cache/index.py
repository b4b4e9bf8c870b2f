"""The SQLite index of the cutout cache: one row per entry, a logical LRU clock, totals.

Each row records an entry's size and when it was last used (``used_seq``, a logical clock),
and where its bytes are: ``pack`` NULL for an entry that is its own file (checked by its
``sha256``), else the name of the pack file holding it at ``offset`` (checked by its
``crc32``). A one-row table of totals, kept by triggers in the same transaction as every
insert, update and delete, lets a put check the byte budget without summing every entry;
the bytes of a pack are the sizes of its rows, so the totals stay exact when whole packs go.
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
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
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


# Columns added after the first release, with their definitions (ALTER TABLE on old caches).
_ADDED_COLUMNS = {
    "pack": "TEXT",
    "offset": "INTEGER NOT NULL DEFAULT 0",
    "crc32": "INTEGER",
    "meta": "TEXT",
}
# Finding the rows of one pack (eviction, drops) without a scan; own-file rows stay out.
_PACK_INDEX = (f"CREATE INDEX IF NOT EXISTS {_TABLE}_pack ON {_TABLE} (pack) "
               "WHERE pack IS NOT NULL")


@dataclass
class Eviction:
    """What an eviction took: the keys, and the packs that went whole with them (their
    files are the caller's to delete; own-file keys are those not in a pack)."""

    keys: list[str] = field(default_factory=list)
    packs: set[str] = field(default_factory=set)
    own_keys: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.keys)


@dataclass
class Replaced:
    """What a record replaced: own-file keys now stored elsewhere (their old files are
    left over) and packs that no row refers to any more (their files can go)."""

    own_keys: list[str] = field(default_factory=list)
    empty_packs: set[str] = field(default_factory=set)


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
        this process's other threads' (see the module's docstring). Inside this thread's
        own write it is part of that transaction: the cache renames and deletes files
        inside the write that records or forgets them."""
        db = self.db()
        with self._writing:
            if db.conn.in_transaction:  # nested: the outer write commits or rolls back
                yield db
                return
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
                        "pack": str,
                        "offset": int,
                        "crc32": int,
                        "meta": str,  # what the caller keeps with the bytes (an outcome)
                    },
                    pk="key",
                    not_null={"offset"},
                    defaults={"offset": 0},
                )
                db[_TABLE].create_index(["used_seq"])
            else:  # a cache made before packs: add their columns, keep the rows
                columns = db[_TABLE].columns_dict
                for name, definition in _ADDED_COLUMNS.items():
                    if name not in columns:
                        db.execute(f'ALTER TABLE {_TABLE} ADD COLUMN "{name}" {definition}')
            db.execute(_PACK_INDEX)
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
        """The entry of ``key`` (size, sha256 or pack/offset/crc32, times, hits), or None."""
        rows = list(self.db().query(f"SELECT * FROM {_TABLE} WHERE key = ?", [key]))
        return rows[0] if rows else None

    def rows(self, keys: list[str]) -> dict[str, sqlite3.Row]:
        """The entries of those ``keys`` that exist, by key (one query per 500 keys);
        each reads by column name (``row["pack"]``), built in C: a warm catalog job reads
        tens of thousands."""
        cursor = self.db().conn.cursor()
        cursor.row_factory = sqlite3.Row
        try:
            return {row["key"]: row for where, part in _key_batches(keys)
                    for row in cursor.execute(f"SELECT * FROM {_TABLE} WHERE {where}", part)}
        finally:
            cursor.close()

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
        """Delete the own-file entry of ``key`` unless another writer has replaced it
        meanwhile."""
        with self.write() as db:
            db.execute(
                f"DELETE FROM {_TABLE} WHERE key = ? AND sha256 = ? AND pack IS NULL",
                [key, expected_sha256],
            )

    def forget_packed(self, pack: str, keys: Collection[str] | None = None) -> bool:
        """Delete the entries ``keys`` (all if None) that are still in ``pack``; True if
        no entry refers to the pack any more (its file can go)."""
        with self.write() as db:
            if keys is None:
                db.execute(f"DELETE FROM {_TABLE} WHERE pack = ?", [pack])
                return True
            db.conn.executemany(f"DELETE FROM {_TABLE} WHERE key = ? AND pack = ?",
                                [(key, pack) for key in keys])
            return not self._pack_in_use(db, pack)

    @staticmethod
    def _pack_in_use(db: sqlite_utils.Database, pack: str) -> bool:
        return db.execute(f"SELECT 1 FROM {_TABLE} WHERE pack = ? LIMIT 1",
                          [pack]).fetchone() is not None

    def record(self, key: str, size: int, sha256: str) -> None:
        """Record (or replace) the entry of a file just written, as the most recent."""
        self.record_many([(key, size, sha256)])

    def record_many(self, entries: list[tuple[str, int, str]]) -> Replaced:
        """Record (or replace) entries (key, size, sha256) of files just written, in this
        order as the most recent, in one transaction; what they replaced in packs."""
        return self._upsert([(key, size, sha256, None, 0, None, None)
                             for key, size, sha256 in entries])

    def record_packed(self, pack: str, entries: list[tuple[str, int, int, int]],
                      metas: Mapping[str, str] | None = None) -> Replaced:
        """Record (or replace) the entries (key, offset, size, crc32) of the pack file
        ``pack`` just written, in this order as the most recent, in one transaction; what
        they replaced (own files now left over, packs no row refers to any more).
        ``metas``: text kept with some keys' entries (``row["meta"]``)."""
        metas = metas or {}
        return self._upsert([(key, size, None, pack, offset, crc, metas.get(key))
                             for key, offset, size, crc in entries])

    def _upsert(self, rows: list[tuple[str, int, str | None, str | None, int, int | None,
                                       str | None]]) -> Replaced:
        """Insert or replace rows (key, size, sha256, pack, offset, crc32, meta) as the most
        recent."""
        replaced = Replaced()
        if not rows:
            return replaced
        now = time.time()
        with self.write() as db:
            before = self._locations(db, [row[0] for row in rows])
            # An upsert, not INSERT OR REPLACE: REPLACE deletes without firing the triggers.
            db.conn.executemany(
                f"INSERT INTO {_TABLE} "
                '(key, size, sha256, pack, "offset", crc32, meta, created_at, used_at, '
                "used_seq, hits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                f"(SELECT COALESCE(MAX(used_seq), 0) + 1 FROM {_TABLE}), 0) "
                "ON CONFLICT(key) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
                'pack = excluded.pack, "offset" = excluded."offset", crc32 = excluded.crc32, '
                "meta = excluded.meta, "
                "created_at = excluded.created_at, used_at = excluded.used_at, "
                "used_seq = excluded.used_seq, hits = 0",
                [(*row, now, now) for row in rows],
            )
            new_pack = {row[0]: row[3] for row in rows}
            for key, old_pack in before.items():
                if old_pack is None and new_pack[key] is not None:
                    replaced.own_keys.append(key)
                elif old_pack is not None and old_pack != new_pack[key]:
                    replaced.empty_packs.add(old_pack)
            replaced.empty_packs = {pack for pack in replaced.empty_packs
                                    if not self._pack_in_use(db, pack)}
        return replaced

    @staticmethod
    def _locations(db: sqlite_utils.Database, keys: list[str]) -> dict[str, str | None]:
        """The pack (None: own file) of those ``keys`` that have entries."""
        return {key: pack for where, part in _key_batches(keys) for key, pack in
                db.execute(f"SELECT key, pack FROM {_TABLE} WHERE {where}", part)}

    def evict_over(self, max_bytes: int, keep: str | Collection[str] | None = None, *,
                   spare_bytes: int | None = None) -> Eviction:
        """Delete least recently used entries (never ``keep``: one key or several) until the
        total fits ``max_bytes`` and, if given, ``spare_bytes`` more would still fit on the
        disk (negative: that many bytes must go); return what went, whose files the caller
        removes.

        An entry in a pack takes all entries of its pack with it (their bytes are the pack
        file's bytes), and a pack holding a ``keep`` key is never chosen. A pack is as
        recent as its most recently used entry (a hit marks one entry of its pack used:
        see :meth:`vo_service.cache.CutoutCache.open_many`), so it goes when the scan
        reaches that entry. The total is the running one (one row), so a put within budget
        costs O(1), and an eviction reads only as many entries, oldest first, as it removes.
        """
        evicted = Eviction()
        with self.write() as db:
            total = int(db.execute(f"SELECT bytes FROM {_TOTALS} WHERE id = 1").fetchone()[0])
            if _fits(total, max_bytes, spare_bytes):  # another writer evicted meanwhile
                return evicted
            if spare_bytes is not None:
                max_bytes = min(max_bytes, total + spare_bytes)
            kept = {keep} if isinstance(keep, str) else set(keep or ())
            protected: set[str] = set()  # packs holding a kept key
            packs: dict[str, tuple[int, list[tuple[str, int]]]] = {}  # freshest, members
            cursor = db.conn.execute(
                f"SELECT key, size, pack, used_seq FROM {_TABLE} ORDER BY used_seq ASC")
            for key, size, pack, used_seq in cursor:
                if total <= max_bytes:
                    break
                if pack is None:
                    if key not in kept:
                        evicted.keys.append(key)
                        evicted.own_keys.append(key)
                        total -= size
                    continue
                if pack in evicted.packs or pack in protected:
                    continue
                if pack not in packs:
                    members = db.execute(f"SELECT key, size, used_seq FROM {_TABLE} "
                                         "WHERE pack = ?", [pack]).fetchall()
                    if any(member in kept for member, _, _ in members):
                        protected.add(pack)
                        continue
                    packs[pack] = (max(seq for _, _, seq in members),
                                   [(member, member_size) for member, member_size, _ in members])
                freshest, members_sizes = packs[pack]
                if used_seq < freshest:  # used since: the pack's turn comes at that entry
                    continue
                evicted.packs.add(pack)
                evicted.keys.extend(member for member, _ in members_sizes)
                total -= sum(member_size for _, member_size in members_sizes)
            cursor.close()
            db.conn.executemany(f"DELETE FROM {_TABLE} WHERE key = ?",
                                [(k,) for k in evicted.own_keys])
            db.conn.executemany(f"DELETE FROM {_TABLE} WHERE pack = ?",
                                [(p,) for p in evicted.packs])
        return evicted

    def keys(self) -> set[str]:
        """Every key the index knows."""
        return {row[0] for row in self.db().execute(f"SELECT key FROM {_TABLE}")}

    def own_file_keys(self) -> set[str]:
        """The keys whose entries are files of their own (not in a pack)."""
        return {row[0] for row in
                self.db().execute(f"SELECT key FROM {_TABLE} WHERE pack IS NULL")}

    def packs(self) -> set[str]:
        """The names of the pack files that entries refer to."""
        return {row[0] for row in self.db().execute(
            f"SELECT DISTINCT pack FROM {_TABLE} WHERE pack IS NOT NULL")}

    def fits(self, max_bytes: int, spare_bytes: int | None = None) -> bool:
        """Whether the running total fits ``max_bytes`` and ``spare_bytes`` (see
        :meth:`evict_over`) is not negative: read without taking the write lock."""
        return _fits(self.totals()[0], max_bytes, spare_bytes)

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


def _key_batches(keys: list[str], size: int = 500) -> Iterator[tuple[str, list[str]]]:
    """(``key IN (?, …)`` clause, its keys) for ``keys``, at most ``size`` at a time (SQLite
    caps the parameters of one statement)."""
    for start in range(0, len(keys), size):
        part = keys[start:start + size]
        yield f"key IN ({', '.join('?' * len(part))})", part


def _fits(total: int, max_bytes: int, spare_bytes: int | None) -> bool:
    """Whether ``total`` bytes fit the budget and leave ``spare_bytes`` on the disk."""
    return total <= max_bytes and (spare_bytes is None or spare_bytes >= 0)
