"""One unit of batch work: the targets of one image, cut in one pass, through the cache.

Runs on a worker thread. Each (target, image) has a small cached JSON record of its
outcome (status, pixel box, message) beside its stamp files, so a target met before is
answered from the cache without opening the image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vo_service.cache import CutoutCache, make_key, source_identity
from vo_service.engine.batch import iter_cutouts
from vo_service.engine.preview import render_preview
from vo_service.engine.reading import OpenImage
from vo_service.engine.spectral import CutoutError
from vo_service.jobs.stamps import publish_cached
from vo_service.shapes import CenterSize

SUFFIX = {"fits": ".fits", "png": ".png"}


@dataclass(frozen=True)
class Target:
    """One usable catalog row: position (ICRS deg) and stamp size."""

    row: int
    target_id: str
    ra: float
    dec: float
    size: float
    unit: str

    @property
    def region(self) -> CenterSize:
        return CenterSize(self.ra, self.dec, self.size, self.size, self.unit)


@dataclass
class StampTask:
    """Targets on one image; each entry is (target, stem of its files in the job)."""

    record: object
    entries: list[tuple[Target, str]]


@dataclass
class Outcome:
    """What became of one (target, image): status, box, and files (relative path, size)."""

    target: Target
    status: str
    message: str = ""
    ranges: list[tuple[int, int]] | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    from_cache: bool = False


def stamp_keys(identity: dict, target: Target, formats: tuple[str, ...]) -> dict[str, str]:
    """Cache keys of a target's outcome record and of each stamp format."""
    request = {"source": identity, "center": [target.ra, target.dec],
               "size": [target.size, target.size, target.unit], "pad": False}
    keys = {"meta": make_key({**request, "what": "batch-outcome"})}
    for fmt in formats:
        keys[fmt] = make_key({**request, "what": "stamp", "format": fmt,
                              "render": {} if fmt == "fits" else {"stretch": "linear",
                                                                  "limits": "zscale"}})
    return keys


def cut_task(task: StampTask, cache: CutoutCache, formats: tuple[str, ...], max_pixels: int,
             stamp_dir: Path) -> list[Outcome]:
    """Cut (or find in the cache) every target of one image; link stamps into the job."""
    record = task.record
    identity = source_identity(record.path, record.hdu)
    outcomes: list[Outcome] = []
    misses: list[tuple[Target, str, dict[str, str]]] = []
    for target, stem in task.entries:
        keys = stamp_keys(identity, target, formats)
        outcome = _from_cache(cache, target, stem, keys, formats, stamp_dir)
        if outcome is None:
            misses.append((target, stem, keys))
        else:
            outcomes.append(outcome)
    if misses:
        outcomes.extend(_cut_misses(record, misses, cache, formats, max_pixels, stamp_dir))
    return outcomes


def _from_cache(cache: CutoutCache, target: Target, stem: str, keys: dict[str, str],
                formats: tuple[str, ...], stamp_dir: Path) -> Outcome | None:
    meta = cache.open(keys["meta"])
    if meta is None:
        return None
    with meta:
        known = json.loads(b"".join(meta.iter_chunks()))
    outcome = Outcome(target, known["status"], known["message"],
                      [tuple(r) for r in known["ranges"]] if known["ranges"] else None,
                      from_cache=True)
    if not known["stamp"]:
        return outcome
    for fmt in formats:
        cached = cache.open(keys[fmt])
        if cached is None:
            _unlink_published(outcome, stamp_dir)
            return None
        relative = stem + SUFFIX[fmt]
        outcome.files[fmt] = (relative, publish_cached(cached, stamp_dir / relative))
    return outcome


def _unlink_published(outcome: Outcome, stamp_dir: Path) -> None:
    for relative, _ in outcome.files.values():
        (stamp_dir / relative).unlink(missing_ok=True)


def _cut_misses(record, misses, cache: CutoutCache, formats: tuple[str, ...], max_pixels: int,
                stamp_dir: Path) -> list[Outcome]:
    outcomes: list[Outcome] = []
    try:
        with OpenImage(record.path, record.hdu) as image:
            results = list(iter_cutouts(image, [t.region for t, _, _ in misses],
                                        max_pixels=max_pixels))
    except (CutoutError, OSError, ValueError) as exc:
        # the image cannot be read now: report, but do not cache the failure
        return [Outcome(t, "error", f"{type(exc).__name__}: {exc}") for t, _, _ in misses]
    for result in results:
        target, stem, keys = misses[result.index]
        ranges = [tuple(r) for r in result.pixel_box.ranges] if result.pixel_box else None
        outcome = Outcome(target, result.status, result.message, ranges)
        if result.has_stamp:
            products = {"fits": result.fits_bytes}
            products["png"] = lambda r=result: render_preview(np.asarray(r.data, dtype=float))
            for fmt in formats:
                relative = stem + SUFFIX[fmt]
                content = products[fmt]()
                path = cache.put(keys[fmt], content)
                outcome.files[fmt] = (relative, _publish(path, content, stamp_dir / relative))
        cache.put(keys["meta"], json.dumps({
            "status": outcome.status, "message": outcome.message, "ranges": ranges,
            "stamp": bool(result.has_stamp),
        }).encode())
        outcomes.append(outcome)
    return outcomes


def _publish(path: Path, content: bytes, target: Path) -> int:
    """Link a freshly cached stamp into the job (or write the bytes if already evicted)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(path, target)
    except OSError:
        target.write_bytes(content)
    return len(content)
