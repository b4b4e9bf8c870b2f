"""What the job store remembers of one (target, image) pair, and how its pixel box is stored.

A catalog job meeting a target it met before (same image, position and size) answers from
this memo without opening the image. The pixel box is stored as text in the
``stamp_outcomes.ranges`` column through one function pair, :func:`encode_ranges` and
:func:`decode_ranges`, which also reads what earlier versions wrote there.
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
