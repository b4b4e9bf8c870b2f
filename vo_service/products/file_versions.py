"""Values made from a file, kept for each version of it: a finished job's manifest is read
once for its gallery and once for its sky, not on every request of the web page, and a
catalog job's upload once when the job is created and run at once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class PerVersion(Generic[T]):
    """The values ``make(path)`` of the ``size`` most recently used file versions (path,
    inode, modification time in ns, size); a file rewritten (a running job's manifest) or
    grown (its stamps file) is made again."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[tuple[str, int, int, int, Hashable], T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, make: Callable[[Path], T], how: Hashable = None) -> T:
        """The value of the file's current version, made now if it is not kept; ``how``:
        what else ``make`` depends on (values made differently are kept apart)."""
        stat = path.stat()
        key = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size, how)
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = make(path)  # outside the lock: requests for other files go on
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value
