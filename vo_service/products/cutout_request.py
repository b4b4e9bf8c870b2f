"""A cutout request, typed: which images (IDs), which parts (regions, BAND, TIME, POL) and
in which form (FITS or a PNG/JPEG preview), in SODA units.

``/sync`` makes one :class:`CutoutRequest` per HTTP request, a SODA job one per
combination of its values; both read the values with :func:`parse_cutout_values`, so a
value means the same wherever it is sent. Which values may repeat, and what a missing one
means, is the caller's to say (SODA 1.0 §3.3; DESIGN.md "Decisions").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vo_service.engine.preview import PreviewOptions
from vo_service.errors import UsageError
from vo_service.products.parameters import (
    ResponseFormat,
    parse_circle,
    parse_interval,
    parse_polygon,
    parse_pos,
)
from vo_service.products.stitching import Stitching
from vo_service.shapes import Shape

FITS_MIME = "application/fits"
PREVIEW_MIMES = ("image/png", "image/jpeg")
POL_LABELS = ("I", "Q", "U", "V", "RR", "LL", "RL", "LR", "XX", "YY", "XY", "YX",
              "POLI", "POLA")


@dataclass(frozen=True)
class CutoutRequest:
    """One product to make: every ID x region with the filters, parsed and validated
    (values in SODA units)."""

    ids: tuple[str, ...]
    regions: tuple[Shape, ...]  # in request order; empty = the whole spatial extent
    band: tuple[float, float] | None  # barycentric wavelength, m
    time: tuple[float, float] | None  # MJD
    pol: tuple[str, ...] | None  # one filter
    response_format: ResponseFormat
    preview: PreviewOptions | None  # set for image/png and image/jpeg
    runid: str | None
    stitch: Stitching | None = None  # STITCH: fill stamps across tile edges (stitching.py)

    @property
    def cutout_count(self) -> int:
        return len(self.ids) * max(1, len(self.regions))


@dataclass(frozen=True)
class CutoutValues:
    """The cutout parameters of a request, each value parsed, as often as it was given."""

    ids: tuple[str, ...]
    regions: tuple[Shape, ...]  # CIRCLE, POLYGON and POS, in request order
    bands: tuple[tuple[float, float], ...]
    times: tuple[tuple[float, float], ...]
    pol: tuple[str, ...] | None  # one filter: the labels of every POL value, sorted

    @property
    def selects_a_part(self) -> bool:
        """Whether any region or filter says which part of an image to cut."""
        return bool(self.regions or self.bands or self.times) or self.pol is not None


def parse_cutout_values(pairs: Iterable[tuple[str, str]]) -> CutoutValues:
    """ID, the regions, BAND, TIME and POL of (upper-case name, value) pairs; other names
    are the caller's. A value that is not valid is a UsageError saying what to fix."""
    pairs = list(pairs)
    regions: list[Shape] = []
    for name, value in pairs:
        if name == "CIRCLE":
            regions.append(parse_circle(value))
        elif name == "POLYGON":
            regions.append(parse_polygon(value))
        elif name == "POS":
            regions.append(parse_pos(value))
    bands = tuple(parse_interval("BAND", value) for name, value in pairs if name == "BAND")
    times = tuple(parse_interval("TIME", value) for name, value in pairs if name == "TIME")
    labels = [label.strip().upper() for name, value in pairs if name == "POL"
              for label in value.split()]
    for label in labels:
        if label not in POL_LABELS:
            raise UsageError(f"POL: {label!r} is not a polarization state; use one of "
                             + " ".join(POL_LABELS))
    return CutoutValues(
        ids=tuple(value.strip() for name, value in pairs if name == "ID"),
        regions=tuple(regions), bands=bands, times=times,
        pol=tuple(sorted(set(labels))) if labels else None)
