"""Stream stamps into one archive: ZIP (stored, ZIP64 when large) or tar.

The ZIP writer is minimal on purpose: stamps are already-final byte strings, so each
member is one local header + the bytes, and the central directory is written at the end
(APPNOTE 6.3.x sections 4.3.7, 4.3.12, 4.3.14-16). It costs a few microseconds per member
where `zipfile.writestr` costs tens; archives are read back with `zipfile` in the tests.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
import tarfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from vo_service.engine.cutout import CutoutResult

ZIP32_LIMIT = 0xFFFFFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")


def _dos_time(epoch: float) -> tuple[int, int]:
    t = time.localtime(epoch)
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
            ((max(t.tm_year, 1980) - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)


class ZipStream:
    """Write-only ZIP of stored members to a binary stream or path, one pass."""

    def __init__(self, target: str | Path | io.RawIOBase | io.BufferedIOBase, *,
                 zip64_from: int = ZIP32_LIMIT) -> None:
        self._zip64_from = zip64_from  # lower only to test the ZIP64 records
        self._own = isinstance(target, str | Path)
        self._stream = open(target, "wb") if self._own else target  # noqa: SIM115
        self._offset = 0
        self._entries: list[tuple[bytes, int, int, int]] = []
        self._time, self._date = _dos_time(time.time())
        self._appended = False

    def add(self, name: str, chunks: Iterable[bytes | memoryview], crc: int | None = None
            ) -> None:
        """One member from byte chunks (held briefly to compute the CRC and size; ``crc``:
        their CRC-32 when the caller already knows it). Not while `ZipAppender`s are still
        appending to the same file."""
        if self._appended:
            self._seek_end()
        header, parts, (encoded, crc, size) = _local_member(name, chunks, self._time,
                                                            self._date, crc)
        write = self._stream.write
        write(header)
        for part in parts:
            write(part)
        self._entries.append((encoded, crc, size, self._offset))
        self._offset += len(header) + size

    def flush(self) -> None:
        """Push buffered bytes to the file (before other processes append to it)."""
        self._stream.flush()

    def adopt(self, entries: list[tuple[bytes, int, int, int]]) -> None:
        """Take on members that `ZipAppender`s in other processes appended to this
        archive's file (entries with offsets in the file); the central directory is then
        written after everything appended so far."""
        self._entries.extend(entries)
        self._appended = True

    def _seek_end(self) -> None:
        """Continue after what appenders wrote (the file's end)."""
        self._stream.flush()
        end = os.fstat(self._stream.fileno()).st_size
        if end != self._offset:
            self._stream.seek(end)
            self._offset = end
        self._appended = False

    def close_part(self) -> list[tuple[bytes, int, int, int]]:
        """Close a part written by a worker without a central directory; returns its
        entries for `append_part` (name, crc, size, offset within the part)."""
        if self._own:
            self._stream.close()
        else:
            self._stream.flush()
        return self._entries

    def append_part(self, part: str | Path, entries: list[tuple[bytes, int, int, int]]
                    ) -> list[tuple[bytes, int, int, int]]:
        """Copy a worker's part (local records only) in and adopt its entries; returns them
        with their offsets in this archive."""
        if self._appended:
            self._seek_end()
        self._stream.flush()
        with open(part, "rb") as source:
            length = os.fstat(source.fileno()).st_size
            copied = self._copy_in_kernel(source, length)
            if copied < length:
                source.seek(copied)
                shutil.copyfileobj(source, self._stream, 8 << 20)
        base = self._offset
        placed = [(name, crc, size, base + offset) for name, crc, size, offset in entries]
        self._entries.extend(placed)
        self._offset += length
        return placed

    def _copy_in_kernel(self, source: io.BufferedReader, length: int) -> int:
        """copy_file_range from the part into the archive; bytes copied (0 if unsupported)."""
        done = 0
        try:
            target = self._stream.fileno()
            while done < length:
                step = os.copy_file_range(source.fileno(), target, length - done)
                if step == 0:
                    break
                done += step
        except (AttributeError, OSError, io.UnsupportedOperation):
            pass
        if done:
            self._stream.seek(0, os.SEEK_END)  # resync the buffered writer's position
        return done

    def close(self) -> None:
        if self._appended:  # the directory goes after what the appenders wrote
            self._seek_end()
        start = self._offset
        write = self._stream.write
        for encoded, crc, size, offset in self._entries:
            extra = b""
            stored_offset = offset
            if offset >= self._zip64_from:
                extra = struct.pack("<HHQ", 0x0001, 8, offset)
                stored_offset = ZIP32_LIMIT
            version = 45 if extra else 20
            entry = _CENTRAL.pack(0x02014B50, (3 << 8) | version, version, 0x800, 0,
                                  self._time, self._date, crc, size, size, len(encoded),
                                  len(extra), 0, 0, 0, 0o100644 << 16, stored_offset)
            write(entry + encoded + extra)
            self._offset += len(entry) + len(encoded) + len(extra)
        size = self._offset - start
        count = len(self._entries)
        if count >= 0xFFFF or max(start, size) >= self._zip64_from:
            write(_END64.pack(0x06064B50, 44, 45, 45, 0, 0, count, count, size, start))
            write(_LOCATOR64.pack(0x07064B50, 0, self._offset, 1))
            write(_END.pack(0x06054B50, 0, 0, 0xFFFF, 0xFFFF, ZIP32_LIMIT, ZIP32_LIMIT, 0))
        else:
            write(_END.pack(0x06054B50, 0, 0, count, count, size, start, 0))
        if self._own:
            self._stream.close()
        else:
            self._stream.flush()


APPEND_BYTES = 256 << 10  # most bytes a `ZipAppender` write carries (unless one member is larger)


class ZipAppender:
    """Members appended to a `ZipStream`'s file by another process, alongside others.

    Each worker process opens the archive for appending and buffers a few members; a full
    buffer goes out in one O_APPEND `writev`, which the kernel places at the end of the
    file as one piece, and the worker's own file position then tells where it landed.
    No part files and no copying: the parent only adopts the entries (`ZipStream.adopt`)
    and writes the central directory. Use within one machine (one file system).

    Writes are bounded (`APPEND_BYTES`; a larger member goes out alone). With 8 MB writes
    two workers spent ~1 s of kernel time copying 10,000 64-px stamps (220 MB) into the
    page cache, 4-5x what one process writing them in small pieces spends (perf: all in
    the copy into fresh page-cache folios; the page cache sizes folios after the write,
    and on a VM whose host takes free large blocks back every first touch of one faults
    on the host). Writes of one stamp each (a 32 kB bound) cost the other way: two
    processes appending 23 kB at a time to one file spent 1.6-2x the CPU of appending to
    two files, contending for it, and 256 kB writes cost less than half as much
    (`benchmarks/shared_append.py`: 0.98 -> 0.44 CPU-s for 920 MB); two workers of the
    engine benchmark went from 1.41-1.56x one worker to 1.45-1.72x (per CPU-second
    0.85-0.91 -> 0.90-1.02).
    """

    def __init__(self, path: str | Path, *, buffer_bytes: int = APPEND_BYTES) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._buffer_bytes = buffer_bytes
        self._pending: list[bytes | memoryview] = []
        self._pending_entries: list[tuple[bytes, int, int, int]] = []
        self._pending_size = 0
        self.entries: list[tuple[bytes, int, int, int]] = []
        self._time, self._date = _dos_time(time.time())

    def add(self, name: str, chunks: Iterable[bytes | memoryview], crc: int | None = None
            ) -> None:
        """Buffer one member (``crc``: the CRC-32 of its bytes, if known), appending the
        buffer when it is full."""
        header, parts, (encoded, crc, size) = _local_member(name, chunks, self._time,
                                                            self._date, crc)
        if self._pending_size + len(header) + size > self._buffer_bytes:
            self.flush()  # keep each write within the buffer
        self._pending_entries.append((encoded, crc, size, self._pending_size))
        self._pending.append(header)
        self._pending.extend(parts)
        self._pending_size += len(header) + size
        if self._pending_size >= self._buffer_bytes or len(self._pending) > _IOV_MAX - 8:
            self.flush()

    def flush(self) -> None:
        """Append the buffered members in one write and learn where they landed."""
        if not self._pending:
            return
        buffers = self._pending
        if len(buffers) > _IOV_MAX:  # one member of very many chunks
            buffers = [b"".join(buffers)]
        written = os.writev(self._fd, buffers)
        if written != self._pending_size:  # the disk or the quota ran out during the write
            os.write(self._fd, b"".join(buffers)[written:])  # raises what it was (ENOSPC …)
            raise OSError(errno.EIO, f"appended {self._pending_size} bytes to the bundle in "
                          "two writes: another process may have appended between them")
        start = os.lseek(self._fd, 0, os.SEEK_CUR) - written
        self.entries.extend((name, crc, size, start + offset)
                            for name, crc, size, offset in self._pending_entries)
        self._pending, self._pending_entries, self._pending_size = [], [], 0

    def data_offsets(self) -> dict[str, int]:
        """Where the bytes of each member written so far start in the file, by name."""
        return member_data_offsets(self.entries)

    def close(self) -> list[tuple[bytes, int, int, int]]:
        """Flush and close; returns the entries (offsets in the file) for `adopt`."""
        try:
            self.flush()
        finally:
            os.close(self._fd)
        return self.entries


_IOV_MAX = 1024  # writev takes at most this many buffers (Linux IOV_MAX)


def member_data_offsets(entries: list[tuple[bytes, int, int, int]]) -> dict[str, int]:
    """Where each member's bytes start in the archive, by name (stored members: a member
    is its local header, then its bytes unchanged)."""
    return {encoded.decode("utf-8"): offset + _LOCAL.size + len(encoded)
            for encoded, _, _, offset in entries}


def _local_member(name: str, chunks: Iterable[bytes | memoryview], dos_time: int,
                  dos_date: int, known_crc: int | None = None
                  ) -> tuple[bytes, list[bytes | memoryview], tuple[bytes, int, int]]:
    """(local header, data parts, (encoded name, CRC, size)) of one stored member; the
    CRC-32 is computed unless ``known_crc`` gives it."""
    parts = list(chunks)
    size = sum(len(part) if isinstance(part, bytes) else part.nbytes for part in parts)
    crc = known_crc
    if crc is None:
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
    if size >= ZIP32_LIMIT:
        raise ValueError(f"member {name} is too large for a stored stamp ({size} bytes)")
    encoded = name.encode("utf-8")
    header = _LOCAL.pack(0x04034B50, 20, 0x800, 0, dos_time, dos_date, crc, size,
                         size, len(encoded), 0) + encoded
    return header, parts, (encoded, crc, size)


class BundleWriter:
    """Streams stamps into one ZIP (stored, no compression) or tar archive."""

    def __init__(self, target: str | Path | io.BufferedIOBase, fmt: str = "zip") -> None:
        if fmt not in ("zip", "tar"):
            raise ValueError(f"bundle format must be zip or tar, not {fmt!r}")
        self.fmt = fmt
        self.count = 0
        if fmt == "zip":
            self._zip = ZipStream(target)
        elif isinstance(target, str | Path):
            self._tar = tarfile.open(target, "w")  # noqa: SIM115 - closed in close()
        else:
            self._tar = tarfile.open(fileobj=target, mode="w")  # noqa: SIM115

    def add_chunks(self, name: str, chunks: Iterable[bytes | memoryview]) -> None:
        if self.fmt == "zip":
            self._zip.add(name, chunks)
        else:
            payload = b"".join(bytes(part) for part in chunks)
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = int(time.time())
            self._tar.addfile(info, io.BytesIO(payload))
        self.count += 1

    def add_bytes(self, name: str, payload: bytes) -> None:
        self.add_chunks(name, (payload,))

    def add(self, name: str, result: CutoutResult) -> None:
        """One stamp as one FITS member."""
        self.add_chunks(name, result.chunks())

    def close(self) -> None:
        (self._zip if self.fmt == "zip" else self._tar).close()

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
