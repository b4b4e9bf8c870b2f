"""Footprints and targets as region files for DS9 and CASA (astropy-regions).

Footprints become ICRS polygons, targets points; each carries a short label (``text`` in
DS9, ``label`` in CRTF). DS9 ends a label at ``}``, CRTF at a quote: such characters are
dropped from labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.coordinates import SkyCoord
from regions import PointSkyRegion, PolygonSkyRegion, RegionMeta, Regions, RegionVisual

from vo_service.archive.records import Vertices

REGION_FORMATS = {"ds9": "ds9", "reg": "ds9", "crtf": "crtf", "casa": "crtf"}
MIME = {"ds9": "text/x-ds9-region", "crtf": "text/x-crtf-region"}
SUFFIX = {"ds9": "reg", "crtf": "crtf"}
FOOTPRINT_COLOUR = "cyan"
TARGET_COLOUR = "red"
_UNSAFE_LABEL = re.compile(r"[{}'\"\\\n\r]+")


@dataclass(frozen=True)
class LabelledPolygon:
    """A footprint (ICRS degrees) and the label to show with it."""

    vertices: Vertices
    label: str


@dataclass(frozen=True)
class LabelledPoint:
    """A target position (ICRS degrees) and its label."""

    ra: float
    dec: float
    label: str


def region_format(text: str | None) -> str:
    """``ds9`` or ``crtf`` from a FORMAT value (ds9 by default); ValueError otherwise."""
    if text is None:
        return "ds9"
    found = REGION_FORMATS.get(text.strip().lower())
    if found is None:
        raise ValueError(f"region format {text!r} is not offered; use ds9 or crtf")
    return found


def safe_label(text: str) -> str:
    """``text`` without the characters that end a label in DS9 or CRTF."""
    return _UNSAFE_LABEL.sub(" ", text).strip()[:120]


def region_file(polygons: Sequence[LabelledPolygon], points: Sequence[LabelledPoint],
                fmt: str) -> str:
    """The text of a DS9 (``ds9``) or CRTF (``crtf``) region file."""
    shapes = []
    for polygon in polygons:
        vertices = np.asarray(polygon.vertices, dtype=float)
        label = safe_label(polygon.label)
        shapes.append(PolygonSkyRegion(
            SkyCoord(vertices[:, 0], vertices[:, 1], unit="deg", frame="icrs"),
            meta=RegionMeta({"text": label, "label": label}),
            visual=RegionVisual({"color": FOOTPRINT_COLOUR})))
    for point in points:
        label = safe_label(point.label)
        shapes.append(PointSkyRegion(
            SkyCoord(point.ra, point.dec, unit="deg", frame="icrs"),
            meta=RegionMeta({"text": label, "label": label}),
            # "symbol" makes astropy-regions write CRTF symbol[] (its point[] is no CRTF)
            visual=RegionVisual({"color": TARGET_COLOUR, "marker": "x", "symbol": "x"})))
    if not shapes:  # astropy-regions writes nothing at all for no shapes
        return "# Region file format: DS9 version 4.1\nicrs\n" if fmt == "ds9" \
            else "#CRTFv0\n"
    return Regions(shapes).serialize(format=fmt)
