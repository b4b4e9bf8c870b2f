"""Admission of SODA sync cutouts by the memory they will take, not only by their number.

A sync cutout is made in memory: the pixels read, the FITS bytes built from them (and a
preview's float planes). Sixteen 4096 x 4096 cutouts at once took 4.2 GB. Before any pixel
is read, the planned pixel boxes give an estimate (:func:`working_bytes`); the request runs
only if the estimate fits in what is left of ``[limits] sync_memory_bytes`` beside the
requests already running, else it is answered 503 + Retry-After. A request that alone
needs more than the whole budget is a usage error (it never could run): fewer or smaller
cutouts, or /async. The estimate is the product's (the products layer plans it); the budget
is held by whoever makes products in memory for a waiting client (SODA ``/sync``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from vo_service.errors import ServiceUnavailable, UsageError

# Working copies of a FITS answer, in bytes of raw pixels: the pixels read, the FITS file
# joined from them, and the multi-extension file's header + extensions (or the cache
# writing the file while the product is still referenced). tracemalloc: 2.0 for one stamp.
FITS_WORKING_COPIES = 3
# A PNG/JPEG preview also holds float64 planes (physical values, the interval's copy, the
# stretched [0, 1] plane) and the 8-bit image: measured 40 bytes per pixel of a 4096 x 4096
# float32 stamp (tracemalloc), so 48 leaves a margin.
PREVIEW_BYTES_PER_PIXEL = 48
RETRY_AFTER_SECONDS = 5


def working_bytes(raw_bytes: int, pixels: int, *, preview: bool) -> int:
    """Memory a sync answer needs at its peak, from its planned ``pixels`` (all boxes) and
    their ``raw_bytes`` (pixels x bytes per pixel of the source images)."""
    estimate = raw_bytes * FITS_WORKING_COPIES
    return estimate + pixels * PREVIEW_BYTES_PER_PIXEL if preview else estimate


def describe_bytes(count: int) -> str:
    """``count`` bytes for a message: ``512 MiB``, ``1.5 GiB``."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    return f"{max(1, round(count / 2**20))} MiB"


class MemoryBudget:
    """Bytes of working memory shared by the sync requests running at once (thread-safe:
    reservations are made in worker threads)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = max(1, int(limit_bytes))
        self.used = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[Hold]:
        """A holder of reservations, all released when the block ends (whatever happens)."""
        holder = Hold(self)
        try:
            yield holder
        finally:
            holder.release()

    def _take(self, nbytes: int) -> None:
        if nbytes > self.limit:
            raise UsageError(
                f"this request needs about {describe_bytes(nbytes)} of memory to cut, more "
                f"than the {describe_bytes(self.limit)} the service gives sync requests "
                "(sync_memory_bytes); ask for fewer or smaller cutouts, or use /async")
        with self._lock:
            if self.used + nbytes > self.limit:
                busy = self.used
                admitted = False
            else:
                self.used += nbytes
                admitted = True
        if not admitted:
            raise ServiceUnavailable(
                f"other cutouts are using {describe_bytes(busy)} of the "
                f"{describe_bytes(self.limit)} of memory for sync requests and this one "
                f"needs about {describe_bytes(nbytes)}; retry in a few seconds",
                retry_after=RETRY_AFTER_SECONDS)

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes


class Hold:
    """The bytes one request has reserved from a :class:`MemoryBudget`."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.bytes = 0

    def reserve(self, nbytes: int) -> None:
        """Reserve ``nbytes`` more; UsageError beyond the whole budget, ServiceUnavailable
        when the requests running leave too little."""
        if nbytes <= 0:
            return
        self.budget._take(nbytes)
        self.bytes += nbytes

    def release(self) -> None:
        """Give everything back."""
        if self.bytes:
            self.budget._give_back(self.bytes)
            self.bytes = 0
