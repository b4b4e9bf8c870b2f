"""The cutout cache: content-addressed files plus an SQLite index with an LRU byte budget.

A cache key is the sha256 of a canonical description of one product: the source image's
identity as it is on disk *now* (path, size, mtime, HDU), the request in canonical form
(pixel box or region, band, time, pol), the output format and its render options. A source
file that changes gets new keys, so a stamp of an old version is never served.

Files live at ``<cache_dir>/objects/<key[:2]>/<key>`` and are written atomically (temp
file + ``os.replace``). The index (``<cache_dir>/index.sqlite``,
:class:`vo_service.cache.index.CacheIndex`) records each file's size and sha256 and when it
was last used. Every hit re-reads the file and checks both, so a truncated, altered or
missing file is dropped and recomputed, never served. Several threads and processes can
share one cache directory.

The byte budget is ``max_bytes``, and also what the file system can hold while keeping
``min_free_bytes`` free (``shutil.disk_usage``): on a filling disk the cache shrinks, and
a file that does not fit even so is refused as if the disk were full (ENOSPC), instead of
taking the last bytes that the job database needs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlite_utils

from vo_service.cache.index import CacheIndex
from vo_service.errors import storage_failure

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# Files up to this size are verified from one read whose bytes the caller may reuse.
KEEP_CONTENT_BYTES = 1024 * 1024
# Eviction rounds of one put on a filling disk (each measures the free space again).
MAKE_ROOM_ROUNDS = 4
# Free space the cache leaves on its file system by default (Limits.cache_min_free_bytes).
MIN_FREE_BYTES = 64 * 1024**2


def make_key(parts: Mapping[str, object]) -> str:
    """The sha256 (hex) of a canonical JSON rendering of ``parts`` (key order irrelevant)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def source_identity(path: Path, hdu: int | None = None) -> dict[str, object]:
    """Identity of a source image as it is on disk now: resolved path, size, mtime (ns), HDU."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "hdu": hdu}


@dataclass(frozen=True)
class CacheStats:
    """What the index holds now."""

    entries: int
    total_bytes: int
    max_bytes: int


class CachedFile:
    """An open, verified cache file. Reading it is safe even if the entry is evicted meanwhile
    (the open descriptor keeps the data alive on POSIX)."""

    def __init__(self, handle: BinaryIO, path: Path, size: int,
                 content: bytes | None = None) -> None:
        self.handle = handle
        self.path = path
        self.size = size
        self.content = content  # the verified bytes, kept when the file is small

    def iter_chunks(self, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """Yield the file's bytes from the start, then close it."""
        try:
            self.handle.seek(0)
            while chunk := self.handle.read(chunk_size):
                yield chunk
        finally:
            self.handle.close()

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> CachedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CutoutCache:
    """Content-addressed cutout files under ``directory`` with an LRU byte budget.

    Parameters
    ----------
    directory
        Where the files and ``index.sqlite`` live (created if needed).
    max_bytes
        Byte budget; after each ``put`` the least recently used entries are evicted until
        the total is within it (the entry just written is kept even if it alone is larger).
    min_free_bytes
        Free space to leave on the file system: the budget shrinks to what fits above it;
        a put evicts first when its bytes would not fit, and raises ENOSPC if they still
        do not.
    sweep
        Remove stray files now (:meth:`sweep`); False where another process sharing the
        directory already did at startup.
    """

    def __init__(self, directory: Path, max_bytes: int, *,
                 min_free_bytes: int = MIN_FREE_BYTES, sweep: bool = True) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.objects_dir = self.directory / "objects"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.index = CacheIndex(self.directory / "index.sqlite")
        self.index_path = self.index.path
        self._key_locks: dict[str, list] = {}
        self._key_locks_guard = threading.Lock()
        if sweep:
            self.sweep()

    # -- the index (for vo_service.cache.check and tests) --------------------------------

    def _db(self) -> sqlite_utils.Database:
        """This thread's connection to the index."""
        return self.index.db()

    def _write(self) -> contextlib.AbstractContextManager[sqlite_utils.Database]:
        """A write transaction on the index."""
        return self.index.write()

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self.index.close()

    # -- paths ------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """Where the file of ``key`` lives (whether or not it exists)."""
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are lower-case hex digests, got {key!r}")
        return self.objects_dir / key[:2] / key

    # -- reading ----------------------------------------------------------------------------

    def open(self, key: str) -> CachedFile | None:
        """Open the verified file of ``key`` and mark it used, or None on a miss.

        The file is hashed through the descriptor that is returned, so the bytes a caller
        reads are the bytes that were checked. A damaged or missing file is dropped.
        """
        return self.open_many([key])[key]

    def open_many(self, keys: list[str]) -> dict[str, CachedFile | None]:
        """:meth:`open` for many keys with one index query and one transaction marking the
        hits used (in the order given); each file is verified as :meth:`open` does."""
        rows = self.index.rows(list(dict.fromkeys(keys)))
        opened: dict[str, CachedFile | None] = {}
        for key in keys:
            if key not in opened:  # a repeated key is opened once
                row = rows.get(key)
                opened[key] = None if row is None else self._open_verified(key, row)
        try:
            self.index.touch_many([key for key, cached in opened.items() if cached is not None])
        except sqlite3.OperationalError as exc:  # a full disk: serve the hits all the same
            if storage_failure(exc) is None:
                raise
            log.debug("cache hits not marked used: %s", exc)
        return opened

    def _open_verified(self, key: str, row: dict) -> CachedFile | None:
        """The open file of ``key`` if its size and sha256 match ``row``; else drop it."""
        path = self.path_for(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
        except FileNotFoundError:
            log.warning("cache file of %s is missing: dropping the entry", key)
            self._drop(key, expected_sha256=row["sha256"])
            return None
        content = None
        if row["size"] <= KEEP_CONTENT_BYTES:  # one read serves the check and the caller
            content = handle.read(row["size"] + 1)  # a longer file shows as longer
            size, digest = len(content), hashlib.sha256(content).hexdigest()
        else:
            size, digest = _hash_handle(handle)
        if size != row["size"] or digest != row["sha256"]:
            handle.close()
            log.warning("cache file of %s is damaged (%d bytes, recorded %d): dropping",
                        key, size, row["size"])
            self._drop(key, expected_sha256=row["sha256"], unlink=True)
            return None
        if content is not None:  # the verified bytes stand in for the file: no descriptor
            handle.close()
            return CachedFile(io.BytesIO(content), path, size, content)
        handle.seek(0)
        return CachedFile(handle, path, size)

    def get(self, key: str) -> Path | None:
        """The path of the verified file of ``key`` (marked used), or None on a miss."""
        cached = self.open(key)
        if cached is None:
            return None
        cached.close()
        return cached.path

    def __contains__(self, key: str) -> bool:
        return self._row(key) is not None

    def _row(self, key: str) -> dict | None:
        return self.index.row(key)

    def _touch(self, key: str) -> None:
        self.index.touch(key)

    def _drop(self, key: str, *, expected_sha256: str, unlink: bool = False) -> None:
        """Forget ``key`` unless another writer has replaced it meanwhile."""
        self.index.forget(key, expected_sha256=expected_sha256)
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.path_for(key).unlink()

    # -- writing ----------------------------------------------------------------------------

    def put(self, key: str, content: bytes | Path) -> Path:
        """Store ``content`` (bytes, or a file to copy) under ``key`` atomically; return its path.

        The file is written to a temporary name in the same directory, then renamed over the
        final name, and only then recorded in the index. Eviction follows.
        """
        return self.put_many([(key, content)])[key]

    def put_many(self, items: list[tuple[str, bytes | Path]]) -> dict[str, Path]:
        """:meth:`put` for many (key, content) pairs: each file is written atomically as
        :meth:`put` does, then all are recorded in one index transaction and one eviction
        runs, which keeps every key of ``items``. Returns the paths by key."""
        paths: dict[str, Path] = {}
        entries: list[tuple[str, int, str]] = []
        incoming = sum(len(c) if isinstance(c, bytes | bytearray | memoryview)
                       else Path(c).stat().st_size for _, c in items)
        self._make_room(incoming, [key for key, _ in items])
        try:
            for key, content in items:
                paths[key], size, digest = self._write_file(key, content)
                entries.append((key, size, digest))
        finally:  # files already renamed into place are recorded even if a later one fails
            self.index.record_many(entries)
        self.evict(keep=paths.keys())
        return paths

    def _write_file(self, key: str, content: bytes | Path) -> tuple[Path, int, str]:
        """Write ``content`` to ``key``'s path atomically; (path, size, sha256)."""
        path = self.path_for(key)
        try:
            fd, temp_name = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".part",
                                             dir=path.parent)
        except FileNotFoundError:  # first file of this prefix (mkdir every time costs ~1 ms)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".part",
                                             dir=path.parent)
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(content, bytes | bytearray | memoryview):
                    out.write(content)
                    hasher.update(content)
                    size = len(content)
                else:
                    with open(content, "rb") as source:
                        while chunk := source.read(_CHUNK):
                            out.write(chunk)
                            hasher.update(chunk)
                            size += len(chunk)
            # No fsync: after a crash a torn file fails the sha256 check on its next hit and
            # is recomputed, so durability would only cost time here.
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        return path, size, hasher.hexdigest()

    def evict(self, keep: str | Collection[str] | None = None) -> list[str]:
        """Remove least recently used entries (never ``keep``) until the total fits the
        budget; return their keys.

        The total is the running one (one row), so a put within budget costs O(1). The budget
        is also capped by the free space of the file system (see :meth:`spare_bytes`).
        """
        victims = self.index.evict_over(self.max_bytes, keep, spare_bytes=self.spare_bytes())
        self._remove(victims)
        return victims

    def _make_room(self, incoming: int, keep: list[str]) -> None:
        """Evict until ``incoming`` bytes fit above ``min_free_bytes``; ENOSPC if they
        cannot (the disk is filled by something else than the cache)."""
        spare = self.spare_bytes()
        for _ in range(MAKE_ROOM_ROUNDS):
            if spare is None or spare >= incoming:
                return
            # the index's own pages (its write-ahead log grows as entries go) can take a few
            # KiB of what the evicted files gave back: measure again, evict again if short
            victims = self.index.evict_over(self.max_bytes, keep, spare_bytes=spare - incoming)
            if not victims:
                break
            self._remove(victims)
            spare = self.spare_bytes()
        if spare is not None and spare < incoming:
            raise OSError(errno.ENOSPC, f"the cutout cache keeps {self.min_free_bytes} bytes "
                          f"free on its disk and cannot store {incoming} more "
                          f"({spare + self.min_free_bytes} free)")

    def spare_bytes(self) -> int | None:
        """Bytes the cache may still add before its file system has less than
        ``min_free_bytes`` free (negative: that many should go); None if unknown."""
        try:
            return shutil.disk_usage(self.directory).free - self.min_free_bytes
        except OSError:
            return None

    def _remove(self, victims: list[str]) -> None:
        """Delete the files of evicted keys."""
        for key in victims:
            with contextlib.suppress(FileNotFoundError):
                self.path_for(key).unlink()
        if victims:
            log.info("cache over budget (cache_bytes or free disk space): evicted %d entries",
                     len(victims))

    # -- both -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """Serialise computations of one key within this process (no duplicate work)."""
        with self._key_locks_guard:
            entry = self._key_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._key_locks_guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._key_locks[key]

    def open_or_compute(
        self, key: str, compute: Callable[[], bytes]
    ) -> tuple[CachedFile, bool]:
        """Open the verified file of ``key``, computing and storing it first on a miss.

        Returns the open file and whether it was a hit. ``compute`` runs at most once per
        key at a time in this process; exceptions from it propagate and nothing is stored.
        """
        cached = self.open(key)
        if cached is not None:
            return cached, True
        with self._key_lock(key):
            cached = self.open(key)  # another thread may have computed it meanwhile
            if cached is not None:
                return cached, True
            content = bytes(compute())
            path = self.put(key, content)
        # Serve the bytes just computed: the file may already be evicted by another process.
        return CachedFile(io.BytesIO(content), path, len(content), content), False

    def get_or_compute(self, key: str, compute: Callable[[], bytes]) -> tuple[Path, bool]:
        """The path of ``key``'s file, computing and storing it on a miss; and whether it hit."""
        cached, hit = self.open_or_compute(key, compute)
        cached.close()
        return cached.path, hit

    def sweep(self, min_age_seconds: float = 3600.0) -> int:
        """Delete files the index does not know (left by a crash between the rename and the
        index insert, or half-written temporary files); returns how many were removed.

        Only files older than ``min_age_seconds`` are touched, so writes in flight in other
        processes are left alone.
        """
        known = self.index.keys()
        cutoff = time.time() - min_age_seconds
        removed = 0
        for directory in self.objects_dir.iterdir():
            if not directory.is_dir():
                continue
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name in known or not entry.is_file():
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
        if removed:
            log.info("cache sweep removed %d stray files", removed)
        return removed

    def stats(self) -> CacheStats:
        """Number of entries and bytes recorded in the index (the running totals)."""
        total, count = self.index.totals()
        return CacheStats(entries=count, total_bytes=total, max_bytes=self.max_bytes)

    def keys_by_recency(self) -> list[str]:
        """Keys from least to most recently used (the eviction order)."""
        return self.index.keys_by_recency()

    def clear(self) -> None:
        """Forget every entry and delete the files."""
        self.index.clear()
        shutil.rmtree(self.objects_dir, ignore_errors=True)
        self.objects_dir.mkdir(parents=True, exist_ok=True)

def _hash_handle(handle: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of an open file, read from its start."""
    hasher = hashlib.sha256()
    size = 0
    handle.seek(0)
    while chunk := handle.read(_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return size, hasher.hexdigest()
