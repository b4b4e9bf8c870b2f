"""What is remembered of one (target, image) pair, and how its pixel box is stored.

A catalog job meeting a target it met before (same image, position and size) answers
without opening the image. A target that gave a stamp has its outcome kept with the
stamp's cache entry (:func:`stamp_meta`), so a new stamp costs one index row, not two;
a target without a stamp (no overlap, too large …) is remembered in the job store, as are
stamps' outcomes written by earlier versions. The pixel box is stored as text
(``stamp_outcomes.ranges``, and inside the entry's text) through one function pair,
:func:`encode_ranges` and :func:`decode_ranges`, which also reads what earlier versions
wrote there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vo_service.engine.cutout import StampStatus

# 0-based half-open (start, stop) per FITS axis, NAXIS1 first.
PixelRanges = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class RememberedOutcome:
    """What became of one (target, image): its status, why, its box, and whether it gave a
    stamp (then the stamp's bytes are in the cutout cache, unless evicted since)."""

    status: StampStatus
    message: str = ""
    ranges: PixelRanges | None = None
    has_stamp: bool = False


def encode_ranges(ranges: PixelRanges | None) -> str | None:
    """A pixel box as stored text: ``start:stop`` per axis, comma-separated (``0:64,10:74``).

    Version 1 of the store held a JSON list (``[[0, 64], [10, 74]]``); the two cannot be
    mistaken for each other, so :func:`decode_ranges` reads both.
    """
    if not ranges:
        return None
    return ",".join(f"{start}:{stop}" for start, stop in ranges)


def decode_ranges(text: str | None) -> PixelRanges | None:
    """The pixel box of :func:`encode_ranges` text, or of a version 1 JSON list."""
    if not text:
        return None
    if text[0] == "[":  # version 1: JSON, written before this encoding
        return tuple((int(start), int(stop)) for start, stop in json.loads(text))
    pairs = []
    for axis in text.split(","):
        start, _, stop = axis.partition(":")
        pairs.append((int(start), int(stop)))
    return tuple(pairs)


def stamp_meta(outcome: RememberedOutcome) -> str:
    """The outcome of a target with a stamp as text kept with the stamp's cache entry
    (:attr:`vo_service.cache.CachedFile.meta`): ``status|box|message`` (the box as
    :func:`encode_ranges` writes it; the message last, so it may hold anything)."""
    return f"{outcome.status}|{encode_ranges(outcome.ranges) or ''}|{outcome.message}"


def outcome_of_stamp(meta: str | None) -> RememberedOutcome | None:
    """The outcome :func:`stamp_meta` kept with a stamp, or None (an entry of an earlier
    version, or text it did not write)."""
    if not meta:
        return None
    try:
        status, ranges, message = meta.split("|", 2)
        return RememberedOutcome(StampStatus(status), message, decode_ranges(ranges or None),
                                 has_stamp=True)
    except (TypeError, ValueError):
        return None
