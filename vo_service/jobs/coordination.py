"""What several server processes on one state directory need to share the job service.

``vo-service serve --workers N`` runs N processes over one job store. Each of them creates,
lists, aborts and waits on jobs; exactly one runs them: the holder of :class:`RunnerLock`,
an exclusive ``flock`` on a file in the jobs directory. The kernel releases it when its
process ends, however it ends, so another process takes over (and recovers the jobs it
left) without a stale-lock check. :class:`StoreChanges` tells a process cheaply that
another one has written to the store (SQLite's ``PRAGMA data_version``), so it can look for
new jobs to run and for phase changes that end a blocking WAIT.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from pathlib import Path


class RunnerLock:
    """An exclusive, non-blocking ``flock`` on ``path``: the process holding it runs jobs.

    ``flock`` locks belong to an open file, not to a process, so a second service in the
    same process (a restart in tests) competes like another process would.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if it is free; True if this object holds it now."""
        with self._guard:
            if self._fd is not None:
                return True
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # for people: who runs the jobs
            self._fd = fd
            return True

    def release(self) -> None:
        """Let another process take over (closing the file drops the lock)."""
        with self._guard:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class StoreChanges:
    """Notices commits to an SQLite database made through other connections.

    ``PRAGMA data_version`` changes whenever another connection, in this process or
    another, has committed since the last call; asking costs no disk read.
    """

    def __init__(self, database: Path) -> None:
        self._connection = sqlite3.connect(database, check_same_thread=False,
                                           isolation_level=None)
        self._guard = threading.Lock()
        self._version = self._read()

    def _read(self) -> int:
        with self._guard:
            return int(self._connection.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        """True if the database changed since the last call (or since creation)."""
        version = self._read()
        if version == self._version:
            return False
        self._version = version
        return True

    def close(self) -> None:
        """Close the connection."""
        with self._guard:
            self._connection.close()
