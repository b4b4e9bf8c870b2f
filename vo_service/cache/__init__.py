"""The cutout cache: content-addressed entries plus an SQLite index with an LRU byte budget.

A cache key is the sha256 of a canonical description of one product: the source image's
identity as it is on disk *now* (path, size, mtime, HDU), the request in canonical form
(pixel box or region, band, time, pol), the output format and its render options. A source
file that changes gets new keys, so a stamp of an old version is never served.

An entry is either a file of its own, ``<cache_dir>/objects/<key[:2]>/<key>`` (``put``,
``put_many``), or a byte range of a pack file, ``<cache_dir>/packs/<uuid4 hex>.pack``, that
holds a batch of entries written together (``put_pack``: one file creation for a whole unit
of a catalog job instead of one per stamp). Both are written atomically (temp file in the
same folder + ``os.replace``). The index (``<cache_dir>/index.sqlite``,
:class:`vo_service.cache.index.CacheIndex`) records each entry's size and when it was last
used, and its checksum: the sha256 of an own file, the CRC-32 of a packed entry (2.3 times
faster on 17 kB stamps, and exactly what the ZIP member header of the stamp needs, see
:class:`CachedFile`). Every hit re-reads the bytes and checks size and checksum, so a
truncated, altered or missing entry is dropped and recomputed, never served; a pack that is
missing or shorter than its entries takes all its entries with it. Eviction is LRU, but a
pack goes whole, when it is the least recently used: a pack is as recent as the last hit
on any of its entries. A packed entry that is dropped or replaced leaves its bytes in the pack, not
counted in the totals, until the pack goes (a pack no entry refers to is deleted at once).
Several threads and processes can share one cache directory.

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
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlite_utils

from vo_service.cache.index import CacheIndex, Eviction
from vo_service.errors import storage_failure

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# Files up to this size are verified from one read whose bytes the caller may reuse.
KEEP_CONTENT_BYTES = 1024 * 1024
# Eviction rounds of one put on a filling disk (each measures the free space again).
MAKE_ROOM_ROUNDS = 4
# Free space the cache leaves on its file system by default (Limits.cache_min_free_bytes).
MIN_FREE_BYTES = 64 * 1024**2
PACK_SUFFIX = ".pack"
LINK_SEPARATOR = "L"  # <group>L<uuid hex>.pack: a job's bundle linked (hex has no "L")


class PackedEntryError(LookupError):
    """A path was asked for an entry that has no file of its own (it lives in a pack)."""


def canonical_json(value: object) -> bytes:
    """``value`` as canonical JSON (sorted keys, no spaces, UTF-8): what keys hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def make_key(parts: Mapping[str, object]) -> str:
    """The sha256 (hex) of a canonical JSON rendering of ``parts`` (key order irrelevant)."""
    return hashlib.sha256(canonical_json(parts)).hexdigest()


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
    """An open, verified cache entry. Reading it is safe even if the entry is evicted
    meanwhile (the open descriptor keeps the data alive on POSIX).

    ``handle`` reads exactly the entry's bytes from its position 0 (for a packed entry, a
    view of its range of the pack). ``path`` is the file holding the bytes, from ``offset``
    on: the entry's own file (``offset`` 0), or for a packed entry (``packed``) the pack
    file, shared with other entries — callers must not hard-link or copy it as if it were
    the stamp. ``crc32`` is the verified CRC-32 of a packed entry's bytes (None for own-file
    entries, which are checked by sha256). ``meta``: the text stored with a packed entry
    (:meth:`CutoutCache.put_pack`), or None.
    """

    def __init__(self, handle: BinaryIO, path: Path, size: int,
                 content: bytes | None = None, *, offset: int = 0,
                 crc32: int | None = None, packed: bool = False,
                 meta: str | None = None) -> None:
        self.handle = handle
        self.path = path
        self.size = size
        self.content = content  # the verified bytes, kept when the entry is small
        self.offset = offset
        self.crc32 = crc32
        self.packed = packed
        self.meta = meta

    def iter_chunks(self, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        """Yield the entry's bytes from the start, then close it."""
        try:
            if self.content is not None:  # already in memory (small): no copies
                yield self.content
                return
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
        self.packs_dir = self.directory / "packs"
        self._linking = True  # whether put_linked may try (not across file systems)
        self.packs_dir.mkdir(exist_ok=True)
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
        """Where the own file of ``key`` lives (whether or not it exists)."""
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are lower-case hex digests, got {key!r}")
        return self.objects_dir / key[:2] / key

    def pack_path(self, pack: str) -> Path:
        """Where the pack file named ``pack`` (as the index records it) lives."""
        if not (pack.endswith(PACK_SUFFIX) and pack[:-len(PACK_SUFFIX)].isalnum()):
            raise ValueError(f"pack names are <hex>{PACK_SUFFIX}, got {pack!r}")
        return self.packs_dir / pack

    # -- reading ----------------------------------------------------------------------------

    def open(self, key: str) -> CachedFile | None:
        """Open the verified file of ``key`` and mark it used, or None on a miss.

        The file is hashed through the descriptor that is returned, so the bytes a caller
        reads are the bytes that were checked. A damaged or missing file is dropped.
        """
        return self.open_many([key])[key]

    def open_many(self, keys: list[str]) -> dict[str, CachedFile | None]:
        """:meth:`open` for many keys with one index query and one transaction marking the
        hits used (in the order given; a pack once, see below); each entry is verified as
        :meth:`open` does.

        Packed entries are read pack by pack, each pack opened once; a damaged one is
        dropped alone, a missing or short pack drops all its entries.
        """
        unique = list(dict.fromkeys(keys))  # a repeated key is opened once
        rows = self.index.rows(unique)
        found: dict[str, CachedFile | None] = {}
        by_pack: dict[str, list[tuple[str, sqlite3.Row]]] = {}
        for key in unique:
            row = rows.get(key)
            if row is not None and row["pack"] is not None:
                by_pack.setdefault(row["pack"], []).append((key, row))
            else:
                found[key] = None if row is None else self._open_verified(key, row)
        for pack, members in by_pack.items():
            found.update(self._open_packed(pack, members))
        opened = {key: found[key] for key in unique}
        # An own file is marked used; a pack, which is evicted whole and as recent as its
        # freshest entry, has one of its entries marked (not every hit: a warm catalog job
        # would rewrite every row of the index).
        used = {rows[key]["pack"] or key: key for key, cached in opened.items()
                if cached is not None}
        try:
            self.index.touch_many(list(used.values()))
        except sqlite3.OperationalError as exc:  # a full disk: serve the hits all the same
            if storage_failure(exc) is None:
                raise
            log.debug("cache hits not marked used: %s", exc)
        return opened

    def _open_verified(self, key: str, row: sqlite3.Row) -> CachedFile | None:
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

    def _open_packed(self, pack: str, members: list[tuple[str, sqlite3.Row]]
                     ) -> dict[str, CachedFile | None]:
        """The verified entries ``members`` (key, row) of ``pack``, read through one
        descriptor; damaged ones dropped (None), all of them if the pack is missing or
        shorter than they say."""
        try:
            path = self.pack_path(pack)
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, ValueError):
            log.warning("cache pack %s is missing: dropping its entries", pack)
            self.index.forget_packed(pack)
            return {key: None for key, _ in members}
        shared = _SharedFd(fd)
        try:
            length = os.fstat(fd).st_size
            if any(row["offset"] + row["size"] > length for _, row in members):
                log.warning("cache pack %s is truncated (%d bytes): dropping its entries",
                            pack, length)
                self.index.forget_packed(pack)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return {key: None for key, _ in members}
            opened: dict[str, CachedFile | None] = {}
            damaged: list[str] = []
            for key, row in members:
                offset, size, crc = row["offset"], row["size"], row["crc32"]
                if size <= KEEP_CONTENT_BYTES:  # one read serves the check and the caller
                    content = os.pread(fd, size, offset)
                    good = len(content) == size and zlib.crc32(content) == crc
                    cached = CachedFile(io.BytesIO(content), path, size, content,
                                        offset=offset, crc32=crc, packed=True,
                                        meta=row["meta"])
                else:
                    good = _crc_range(fd, offset, size) == crc
                    cached = CachedFile(_RangeReader(shared, offset, size), path, size,
                                        offset=offset, crc32=crc, packed=True,
                                        meta=row["meta"])
                if good:
                    opened[key] = cached
                else:
                    cached.close()
                    log.warning("cache entry %s in pack %s is damaged: dropping", key, pack)
                    damaged.append(key)
                    opened[key] = None
            if damaged and self.index.forget_packed(pack, damaged):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # no entry left in it
            return opened
        finally:
            shared.release()

    def get(self, key: str) -> Path | None:
        """The path of the verified own file of ``key`` (marked used), or None on a miss.

        Raises :class:`PackedEntryError` for an entry stored in a pack: it has no file of
        its own (read it with :meth:`open`)."""
        cached = self.open(key)
        if cached is None:
            return None
        cached.close()
        if cached.packed:
            raise PackedEntryError(f"cache entry {key} is stored in a pack, not a file of "
                                   "its own: read it with open()")
        return cached.path

    def __contains__(self, key: str) -> bool:
        return self._row(key) is not None

    def _row(self, key: str) -> dict | None:
        return self.index.row(key)

    def _touch(self, key: str) -> None:
        self.index.touch(key)

    def _drop(self, key: str, *, expected_sha256: str, unlink: bool = False) -> None:
        """Forget the own-file entry ``key`` unless another writer has replaced it
        meanwhile (its file deleted in the same write: see :meth:`_install`)."""
        with self.index.write():
            self.index.forget(key, expected_sha256=expected_sha256)
            if unlink:
                self._delete([key], ())

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
        written: list[tuple[str, Path]] = []
        entries: list[tuple[str, int, str]] = []
        incoming = sum(len(c) if isinstance(c, bytes | bytearray | memoryview)
                       else Path(c).stat().st_size for _, c in items)
        self._make_room(incoming, [key for key, _ in items])
        try:
            for key, content in items:
                temporary, size, digest = self._write_temporary(key, content)
                written.append((key, temporary))
                entries.append((key, size, digest))
        finally:  # files written so far are put in place even if a later one fails
            self._install(written, entries)
        paths = {key: self.path_for(key) for key, _ in written}
        self.evict(keep=paths.keys())
        return paths

    def _install(self, written: list[tuple[str, Path]],
                 entries: list[tuple[str, int, str]]) -> None:
        """Rename the ``written`` temporary files to their keys' paths and record their
        ``entries``, in one index write. Eviction deletes own files inside its write too, so
        no other process can delete a file between its rename and its record (a key put
        again while it was being evicted would otherwise be left recorded without a file)."""
        if not written:
            return
        try:
            with self.index.write():
                for key, temporary in written:
                    os.replace(temporary, self.path_for(key))
                replaced = self.index.record_many(entries)
        except BaseException:
            for _, temporary in written:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
            raise
        self._delete((), replaced.empty_packs)  # own files are replaced by the renames

    def put_pack(self, items: list[tuple[str, bytes]],
                 crcs: Mapping[str, int] | None = None,
                 metas: Mapping[str, str] | None = None) -> None:
        """Store the (key, bytes) ``items`` as one new pack file, atomically, then record
        one index entry per key (its offset, size and CRC-32) in one transaction; a key
        already present is replaced. Eviction follows and keeps every key of ``items``.
        ``crcs``: the CRC-32 of some keys' bytes, known to the caller (computed once for
        the cache and a ZIP member); a wrong one only makes the entry a miss later.
        ``metas``: text to keep with some keys' entries (:attr:`CachedFile.meta`).

        The budget, free-space and ENOSPC rules are those of :meth:`put_many`; after an
        error nothing of the pack is recorded or left behind.
        """
        if packed := self._write_pack(items, crcs):
            self._record_packs(dict([packed]), metas)

    def _write_pack(self, items: list[tuple[str, bytes]],
                    crcs: Mapping[str, int] | None = None
                    ) -> tuple[str, list[tuple[str, int, int, int]]] | None:
        """Write the (key, bytes) ``items`` as a new pack file, atomically, after making
        room for them (see :meth:`put_pack`); (its name, its entries as (key, offset, size,
        crc32)) to record, or None without items."""
        layout = pack_layout(items)
        if not layout:
            return None
        incoming = sum(len(content) for _, content in layout.values())
        self._make_room(incoming, list(layout))
        pack = uuid.uuid4().hex + PACK_SUFFIX
        entries: list[tuple[str, int, int, int]] = []
        with _atomic_file(self.packs_dir / pack, ".") as out:  # torn: fails size or CRC
            for key, (offset, content) in layout.items():
                out.write(content)
                crc = crcs.get(key) if crcs else None
                entries.append((key, offset, len(content),
                                zlib.crc32(content) if crc is None else crc))
        return pack, entries

    def put_linked(self, source: Path, entries: list[tuple[str, int, int, int]],
                   group: str, beside: Callable[[str], list[tuple[str, bytes]]] | None = None,
                   metas: Mapping[str, str] | None = None) -> str | None:
        """Record ``entries`` (key, offset, size, crc32), byte ranges of the file
        ``source``, without copying them: ``source`` (a catalog job's bundle, only ever
        appended to) is hard-linked into the cache as a new pack of ``group`` (the job:
        letters and digits); the pack's name, or None if the file cannot be linked
        (another file system: the caller stores copies with :meth:`put_pack`).
        ``beside``: makes, from that name, small (key, bytes) items (a unit's table of
        contents) stored as copies and recorded in the same index transaction; ``metas``
        as for :meth:`put_pack`.

        The entries live as long as the group (:meth:`forget_linked` when the job is
        deleted) or until evicted; the cache counts their bytes, the rest of the bundle
        is the job's."""
        if not entries or not self._linking:
            return None
        pack = f"{group}{LINK_SEPARATOR}{uuid.uuid4().hex}{PACK_SUFFIX}"
        self.pack_path(pack)  # a group of letters and digits (raises ValueError)
        try:
            os.link(source, self.packs_dir / pack)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                self._linking = False  # this cache copies from now on
                log.info("the cutout cache cannot link %s (%s): catalog stamps are copied "
                         "into it", source, exc.strerror)
            return None
        packs = {pack: entries}
        try:
            if beside is not None and (copies := self._write_pack(beside(pack))):
                packs[copies[0]] = copies[1]
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.pack_path(pack).unlink()
            raise
        self._record_packs(packs, metas)
        return pack

    def forget_linked(self, group: str) -> int:
        """Forget the packs linked for ``group`` (a job deleted: its bundle's bytes go
        with it); how many. Their files go first, so that a full disk gets its space
        back; entries whose rows cannot be deleted then (a full disk) are dropped as
        misses on their next lookup (the job service sweeps groups of jobs gone)."""
        paths = list(self.packs_dir.glob(f"{group}{LINK_SEPARATOR}*{PACK_SUFFIX}"))
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        try:
            with self.index.write():  # one transaction for all the job's packs
                for path in paths:
                    self.index.forget_packed(path.name)
        except (OSError, sqlite3.Error) as exc:
            if storage_failure(exc) is None:
                raise
        return len(paths)

    def linked_groups(self) -> set[str]:
        """The groups (jobs) with packs linked into the cache."""
        return {pack.rsplit(LINK_SEPARATOR, 1)[0] for pack in self.index.packs()
                if LINK_SEPARATOR in pack}

    def _record_packs(self, packs: dict[str, list[tuple[str, int, int, int]]],
                      metas: Mapping[str, str] | None = None) -> None:
        """Record the entries (key, offset, size, crc32) of the pack files ``packs`` just
        made (with the ``metas`` of their keys) in one transaction (their files deleted if
        that fails), delete what they replaced, then evict down to the budget, keeping
        them."""
        try:
            with self.index.write():
                replaced = [self.index.record_packed(pack, entries, metas)
                            for pack, entries in packs.items()]
                # in the write: see _install
                self._delete([key for each in replaced for key in each.own_keys], ())
        except BaseException:
            for pack in packs:
                with contextlib.suppress(FileNotFoundError):
                    self.pack_path(pack).unlink()
            raise
        self._delete((), {pack for each in replaced for pack in each.empty_packs})
        self.evict(keep=[key for entries in packs.values() for key, *_ in entries])

    def _delete(self, own_keys: Iterable[str], packs: Iterable[str]) -> None:
        """Delete the own files of ``own_keys`` and the pack files ``packs`` (gone already
        is fine)."""
        for path in [*map(self.path_for, own_keys), *map(self.pack_path, packs)]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _write_temporary(self, key: str, content: bytes | Path) -> tuple[Path, int, str]:
        """Write ``content`` to a temporary file beside ``key``'s path (renamed into place
        by :meth:`_install`); (temporary path, size, sha256)."""
        path = self.path_for(key)
        hasher = hashlib.sha256()
        size = 0
        # a torn file fails the sha256 check on its next hit and is recomputed
        with _temporary_file(path, f".{key[:16]}-") as (out, temporary):
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
        return temporary, size, hasher.hexdigest()

    def evict(self, keep: str | Collection[str] | None = None) -> list[str]:
        """Remove least recently used entries (never ``keep``) until the total fits the
        budget; return their keys.

        The total is the running one (one row), so a put within budget costs O(1). The budget
        is also capped by the free space of the file system (see :meth:`spare_bytes`).
        """
        victims = self._evict_over(keep, self.spare_bytes())
        return victims.keys

    def _make_room(self, incoming: int, keep: list[str]) -> None:
        """Evict until ``incoming`` bytes fit above ``min_free_bytes``; ENOSPC if they
        cannot (the disk is filled by something else than the cache)."""
        spare = self.spare_bytes()
        for _ in range(MAKE_ROOM_ROUNDS):
            if spare is None or spare >= incoming:
                return
            # the index's own pages (its write-ahead log grows as entries go) can take a few
            # KiB of what the evicted files gave back: measure again, evict again if short
            if not self._evict_over(keep, spare - incoming):
                break
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

    def _evict_over(self, keep: str | Collection[str] | None, spare_bytes: int | None
                    ) -> Eviction:
        """Evict as :meth:`CacheIndex.evict_over` says, deleting the own files of the
        victims inside the same index write (see :meth:`_install`), then their packs
        (whose names are never used again). Most puts fit: they take no write lock."""
        if self.index.fits(self.max_bytes, spare_bytes):
            return Eviction()
        with self.index.write():
            victims = self.index.evict_over(self.max_bytes, keep, spare_bytes=spare_bytes)
            self._delete(victims.own_keys, ())
        self._delete((), victims.packs)
        if victims:
            log.info("cache over budget (cache_bytes or free disk space): evicted %d entries "
                     "(%d packs)", len(victims.keys), len(victims.packs))
        return victims

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
        """The path of ``key``'s file, computing and storing it on a miss; and whether it hit.

        Raises :class:`PackedEntryError` if ``key`` is stored in a pack (see :meth:`get`)."""
        cached, hit = self.open_or_compute(key, compute)
        cached.close()
        if cached.packed:
            raise PackedEntryError(f"cache entry {key} is stored in a pack, not a file of "
                                   "its own: read it with open_or_compute()")
        return cached.path, hit

    def sweep(self, min_age_seconds: float = 3600.0) -> int:
        """Delete files the index does not know (left by a crash between the rename and the
        index insert, half-written temporary files, own files of keys since packed, packs
        no entry refers to); returns how many were removed.

        Only files older than ``min_age_seconds`` are touched, so writes in flight in other
        processes are left alone.
        """
        cutoff = time.time() - min_age_seconds
        removed = 0
        known = self.index.own_file_keys()
        for directory in self.objects_dir.iterdir():
            if directory.is_dir():
                removed += remove_strays(directory, known, cutoff)
        removed += remove_strays(self.packs_dir, self.index.packs(), cutoff)
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
        """Forget every entry and delete the files and packs."""
        self.index.clear()
        for folder in (self.objects_dir, self.packs_dir):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _temporary_file(path: Path, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A new file under a temporary name (``prefix``…``.part``) in ``path``'s folder,
    created if need be, and that name; deleted if the block fails. No fsync: a torn file
    fails its checksum on its next hit and is recomputed, so durability would only cost
    time."""
    try:
        fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=path.parent)
    except FileNotFoundError:  # the folder's first file (mkdir every time costs ~1 ms)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out, Path(temp_name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


@contextlib.contextmanager
def _atomic_file(path: Path, prefix: str) -> Iterator[BinaryIO]:
    """:func:`_temporary_file`, renamed to ``path`` when the block ends."""
    with _temporary_file(path, prefix) as (out, temporary):
        yield out
        out.flush()
        os.replace(temporary, path)  # a failure deletes the temporary file


def remove_strays(directory: Path, known: Collection[str], cutoff: float) -> int:
    """Delete the files of ``directory`` whose names are not ``known`` and that were last
    modified before ``cutoff`` (a time); how many went."""
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name in known or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


class _SharedFd:
    """A file descriptor shared by the readers of one pack; closed with its last user."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._users = 1
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            self._users += 1
            return self.fd

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                os.close(self.fd)


class _RangeReader(io.RawIOBase):
    """A read-only file of the bytes ``[offset, offset + size)`` of a shared descriptor
    (positional reads, so readers of one pack do not disturb each other)."""

    def __init__(self, shared: _SharedFd, offset: int, size: int) -> None:
        super().__init__()
        self._shared = shared
        self._fd = shared.acquire()
        self._offset = offset
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        if base + position < 0:
            raise ValueError("negative seek position")
        self._position = base + position
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._offset + self._position)
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._shared.release()
        super().close()


def pack_layout(items: Iterable[tuple[str, bytes]]) -> dict[str, tuple[int, bytes]]:
    """Where :meth:`CutoutCache.put_pack` puts each of ``items`` in its pack: key ->
    (offset, bytes), one after the other in the order given; a key given twice keeps its
    last bytes at its first place. A caller may so record, in an entry stored last, where
    the entries before it lie (see :func:`read_pack_ranges`)."""
    contents = dict(items)
    layout: dict[str, tuple[int, bytes]] = {}
    offset = 0
    for key, content in contents.items():
        layout[key] = (offset, content)
        offset += len(content)
    return layout


def read_pack_ranges(path: Path, ranges: Collection[tuple[int, int, int]]
                     ) -> dict[int, memoryview] | None:
    """The verified bytes of the (offset, size, crc32) ``ranges`` of the pack file
    ``path``, by offset, read in as few pieces as ranges less than ``RANGE_GAP`` apart
    make (a unit's stamps in a job's bundle lie between other units' and ZIP headers);
    None if the pack is gone or shorter, or if any range fails its CRC (the caller then
    reads its entries one by one, through the index, which drops what is damaged)."""
    if not ranges:
        return {}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    pieces: dict[int, memoryview] = {}
    try:
        for start, end, members in _runs(ranges):
            data = memoryview(os.pread(fd, end - start, start))
            if len(data) != end - start:
                return None
            for offset, size, crc in members:
                piece = data[offset - start: offset - start + size]
                if zlib.crc32(piece) != crc:
                    return None
                pieces[offset] = piece
    finally:
        os.close(fd)
    return pieces


RANGE_GAP = 8 * 1024  # a gap read through rather than skipped (ZIP headers, small files)


def _runs(ranges: Collection[tuple[int, int, int]]
          ) -> Iterator[tuple[int, int, list[tuple[int, int, int]]]]:
    """``ranges`` (offset, size, crc32) grouped into runs read in one piece: (start, end,
    the ranges in it), in file order."""
    ordered = sorted(ranges)
    start, end = ordered[0][0], ordered[0][0]
    members: list[tuple[int, int, int]] = []
    for offset, size, crc in ordered:
        if members and offset - end > RANGE_GAP:
            yield start, end, members
            start, members = offset, []
        members.append((offset, size, crc))
        end = max(end, offset + size)
    yield start, end, members


def _crc_range(fd: int, offset: int, size: int) -> int | None:
    """CRC-32 of ``size`` bytes of ``fd`` from ``offset``; None if fewer are there."""
    crc = 0
    end = offset + size
    while offset < end:
        chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
        if not chunk:
            return None
        crc = zlib.crc32(chunk, crc)
        offset += len(chunk)
    return crc


def _hash_handle(handle: BinaryIO) -> tuple[int, str]:
    """Size and sha256 of an open file, read from its start."""
    hasher = hashlib.sha256()
    size = 0
    handle.seek(0)
    while chunk := handle.read(_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return size, hasher.hexdigest()
