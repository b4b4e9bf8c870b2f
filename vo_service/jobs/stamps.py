"""Putting cached files into a job's folder without copying bytes when possible."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vo_service.cache import CachedFile


def publish_cached(cached: CachedFile, target: Path) -> int:
    """Hard-link a cache file to ``target``, else copy it from the open handle; its size.

    A hard link survives the cache evicting the entry later and costs no space or I/O. If
    the entry was evicted (or lives on another file system), or is a byte range of a pack
    shared with other entries, the bytes come from the handle the cache opened, which stays
    readable either way.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not cached.packed:  # a packed entry has no file of its own to link
            with contextlib.suppress(OSError):
                link_replacing(cached.path, target)
                return cached.size
        with open(target, "wb") as out:
            for chunk in cached.iter_chunks():
                out.write(chunk)
        return target.stat().st_size
    finally:
        cached.close()


def link_replacing(source: Path, target: Path) -> None:
    """Hard-link ``source`` as ``target``, replacing a file left there by an earlier run."""
    try:
        os.link(source, target)
    except FileExistsError:
        target.unlink(missing_ok=True)
        os.link(source, target)
