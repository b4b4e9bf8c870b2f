"""A reserve of disk space for the job database: a file deleted when the disk is full.

SQLite needs free pages to write anything, even to delete rows or to record that a job
failed. The job store keeps a file of ``size`` bytes next to its database; when a write
fails for lack of space, the file is deleted and the write tried again, so a failed job is
recorded as ERROR and DELETE requests work (and free more space). The file is made again
once the disk has room for it twice over. A service starting on a full disk releases it
first thing: SQLite cannot even open a database whose shared-memory file must be created.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import threading
from pathlib import Path

from vo_service.config import Settings

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# Below this much free space the disk counts as full (SQLite's -shm file alone is 32 KiB).
FULL_BELOW_BYTES = 1024 * 1024


class SpaceReserve:
    """The reserve file at ``path``: ``size`` bytes of allocated disk (0: no reserve)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = Path(path)
        self.size = max(0, int(size))
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def of_state(cls, settings: Settings) -> SpaceReserve:
        """The reserve of a state directory: ``<jobs_dir>/space-reserve``."""
        return cls(settings.jobs_dir / "space-reserve", settings.limits.state_reserve_bytes)

    @property
    def held(self) -> bool:
        """True while the reserve file exists at its full size."""
        with contextlib.suppress(OSError):
            return self.path.stat().st_size >= self.size > 0
        return False

    def fill(self) -> bool:
        """Make the reserve file if it is missing and the disk has room for it twice over;
        True if it is held afterwards (or none is wanted)."""
        with self._lock:
            if self.size == 0 or self.held:
                return True
            try:
                free = shutil.disk_usage(self.path.parent).free
                if free < 2 * self.size:
                    raise OSError(errno.ENOSPC, f"{free} bytes free")
                self._write()
            except OSError as exc:
                if not self._warned:  # once, not at every sweep
                    log.warning("no space reserve for the job database: %s", exc)
                    self._warned = True
                return False
            log.info("space reserve of %d bytes held at %s", self.size, self.path)
            self._warned = False
            return True

    def _write(self) -> None:
        """Allocate ``size`` bytes under a temporary name, then rename it into place."""
        partial = self.path.with_name(self.path.name + ".part")
        try:
            with open(partial, "wb") as out:
                try:  # allocated blocks without writing them (ext4, XFS, tmpfs)
                    os.posix_fallocate(out.fileno(), 0, self.size)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    # no fallocate here (ZFS): random bytes, since a compressing file
                    # system would store zeros in no space
                    left = self.size
                    while left > 0:
                        left -= out.write(os.urandom(min(_CHUNK, left)))
                    out.flush()
                    os.fsync(out.fileno())  # allocated now, not at a later write-back
            os.replace(partial, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise

    def release(self) -> bool:
        """Delete the reserve file; True if that freed space (it was there)."""
        with self._lock:
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:  # a read-only disk: nothing to gain
                log.debug("space reserve not released: %s", exc)
                return False
        log.warning("the disk of %s is full: released the %d-byte space reserve so that jobs "
                    "can still be failed, aborted and deleted; free space on it",
                    self.path.parent, self.size)
        return True

    def release_if_full(self) -> bool:
        """Release the reserve if its disk has (almost) no free space left."""
        try:
            full = shutil.disk_usage(self.path.parent).free < FULL_BELOW_BYTES
        except OSError:
            return False
        return full and self.release()
