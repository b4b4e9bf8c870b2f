"""Where a catalog job's results lie on the sky: its targets and its stamps' footprints.

Made from the manifest (a public, stable document), so that the MOC (``coverage.fits``, a
result of every catalog job, drawn when first asked for) and the region files the web page
offers describe exactly what the manifest lists. A stamp's footprint is its pixel box
mapped through the source image's WCS (distortions included), one WCS read and one call
per source image.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mocpy import MOC

from vo_service.archive.coverage import (
    coverage_order,
    moc_fits_bytes,
    perimeter_arcsec,
    pixel_scale_arcsec,
    points_moc,
    polygons_moc,
    union,
)
from vo_service.archive.footprint import load_celestial_image
from vo_service.archive.region_files import LabelledPoint, LabelledPolygon
from vo_service.engine.cutout import StampStatus
from vo_service.jobs.running_manifest import MANIFEST_FILE
from vo_service.jobs.store import ResultFile
from vo_service.products.file_versions import PerVersion
from vo_service.products.manifest import ManifestRow, read_manifest

COVERAGE_RESULT = "coverage"
COVERAGE_FILE = "coverage.fits"
COVERAGE_MIME = "application/fits"
STAMP_STATUSES = (StampStatus.OK, StampStatus.PARTIAL)  # manifest rows with a stamp
_BOX = re.compile(r"^\[(\d+):(\d+),(\d+):(\d+)")


@dataclass(frozen=True)
class JobTarget:
    """A catalog row with a position; ``manifest_index``: its first manifest row (0-based,
    what SAMP's ``table.highlight.row`` names); ``target_index``: its place among the
    job's targets (0-based, catalog order, the gallery's OFFSET)."""

    row: int
    target_id: str
    ra: float
    dec: float
    manifest_index: int
    target_index: int


@dataclass(frozen=True)
class JobStamp:
    """The footprint of a target's stamps in one band (ICRS degrees, the pixel box's outer
    corners)."""

    row: int
    band: str
    vertices: tuple[tuple[float, float], ...]


@dataclass
class JobSky:
    """A job's targets (one per catalog row with a position) and the footprints of its
    stamps (one polygon per target, band and pixel box)."""

    targets: list[JobTarget] = field(default_factory=list)
    stamps: list[JobStamp] = field(default_factory=list)
    pixel_scales: list[float] = field(default_factory=list)

    def moc(self) -> MOC:
        """Targets and stamp footprints as one MOC, at the order the stamps' pixel scales
        give (:func:`vo_service.archive.coverage.coverage_order`)."""
        polygons = [s.vertices for s in self.stamps]
        order = coverage_order(self.pixel_scales, perimeter_arcsec(polygons))
        targets = points_moc([t.ra for t in self.targets], [t.dec for t in self.targets],
                             order)
        return union([targets, polygons_moc(polygons, order)], order)

    def region_shapes(self) -> tuple[list[LabelledPolygon], list[LabelledPoint]]:
        """Stamp footprints and targets, labelled, for a region file."""
        names = {t.row: t.target_id for t in self.targets}
        polygons = [LabelledPolygon(s.vertices, f"{names.get(s.row, s.row)} {s.band}".strip())
                    for s in self.stamps]
        return polygons, [LabelledPoint(t.ra, t.dec, t.target_id) for t in self.targets]


def _text(value: object) -> str:
    if value is None or value is np.ma.masked:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def box_corners(pixel_boxes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel corners (x, y) of FITS sections ``[x1:x2,y1:y2,...]`` (1-based,
    inclusive): the outer edges of their first and last pixels, shape (boxes, 4, 2); and
    which of ``pixel_boxes`` were sections (the corners hold only those)."""
    found = [_BOX.match(box or "") for box in pixel_boxes]
    parsed = np.array([m is not None for m in found], dtype=bool)
    edges = np.array([m.groups() for m in found if m is not None], dtype=float).reshape(-1, 4)
    left, right = edges[:, 0] - 1.5, edges[:, 1] - 0.5
    bottom, top = edges[:, 2] - 1.5, edges[:, 3] - 0.5
    corners = np.stack([np.stack([left, bottom], -1), np.stack([right, bottom], -1),
                        np.stack([right, top], -1), np.stack([left, top], -1)], axis=1)
    return corners, parsed


def job_sky(manifest_path: Path, index) -> JobSky:  # noqa: ANN001 - ArchiveIndex
    """The targets and stamp footprints listed in a job's manifest, read once per version
    of the file (the sky view, its region files and the MOC drawn on request share it)."""
    return _skies.get(manifest_path, lambda path: sky_of_rows(read_manifest(path), index))


_skies: PerVersion[JobSky] = PerVersion(4)  # the most recently used jobs' skies


def sky_of_rows(rows: Sequence[ManifestRow], index) -> JobSky:  # noqa: ANN001 - ArchiveIndex
    """The targets and stamp footprints of manifest ``rows`` (in the manifest's order):
    each source image's WCS read once and applied to all its pixel boxes at once."""
    sky = JobSky()
    seen_rows: set[int] = set()
    all_rows: set[int] = set()  # with a position or not (bad rows)
    boxes: dict[str, set[tuple[int, str, str]]] = {}  # image -> {(row, band, box)}
    for k, manifest_row in enumerate(rows):
        row, ra, dec = manifest_row.row, manifest_row.ra, manifest_row.dec
        if row not in seen_rows and ra is not None and dec is not None:
            seen_rows.add(row)
            target_id = _text(manifest_row.target_id) or str(row)
            sky.targets.append(JobTarget(int(row), target_id, float(ra), float(dec), k,
                                         len(all_rows)))
        all_rows.add(row)
        image, box = _text(manifest_row.image_id), _text(manifest_row.pixel_box)
        if image and box and manifest_row.status in STAMP_STATUSES:
            boxes.setdefault(image, set()).add((int(row), _text(manifest_row.band), box))
    # every stamp's corners on the sky, image by image (one WCS call each), then one
    # stamp per distinct footprint
    keys: list[tuple[int, str]] = []
    corner_lists: list[np.ndarray] = []
    for image, entries in boxes.items():
        record = index.get(image)
        celestial = None if record is None else load_celestial_image(
            record.path, record.hdu, record.mtime)
        if celestial is None:  # gone from the index or the disk: nothing to draw
            continue
        scale = pixel_scale_arcsec(record)
        if scale:
            sky.pixel_scales.append(scale)
        ordered = sorted(entries)
        corners, parsed = box_corners([box for _, _, box in ordered])
        if not len(corners):
            continue
        ras, decs = celestial.pixel_to_icrs(corners[..., 0].ravel(), corners[..., 1].ravel())
        corner_lists.append(np.stack([ras.reshape(-1, 4), decs.reshape(-1, 4)], axis=-1))
        keys += [(row, band) for (row, band, _), ok in zip(ordered, parsed, strict=True) if ok]
    if corner_lists:
        sky.stamps = _distinct_stamps(keys, np.concatenate(corner_lists))
    return sky


def _distinct_stamps(keys: list[tuple[int, str]], corners: np.ndarray) -> list[JobStamp]:
    """One stamp per (row, band, corners rounded to 1e-7 deg), in order of first
    appearance (sibling products, BGSUB, RMS, ..., share a footprint); boxes whose corners
    are not all finite are left out."""
    finite = np.isfinite(corners).all(axis=(1, 2))
    bands = {band: code for code, band in enumerate(dict.fromkeys(b for _, b in keys))}
    identity = np.column_stack([
        np.array([row for row, _ in keys], dtype=float),
        np.array([bands[band] for _, band in keys], dtype=float),
        np.round(corners, 7).reshape(len(keys), 8)])[finite] + 0.0  # -0.0 is 0.0
    kept = np.flatnonzero(finite)[np.sort(np.unique(identity, axis=0, return_index=True)[1])]
    chosen = corners[kept].tolist()
    return [JobStamp(keys[k][0], keys[k][1], tuple(map(tuple, vertices)))
            for k, vertices in zip(kept.tolist(), chosen, strict=True)]


def draw_job_coverage(job_dir: Path, index) -> int:  # noqa: ANN001 - ArchiveIndex
    """Write ``coverage.fits`` (the MOC of the targets and stamps the job's manifest lists)
    in ``job_dir``, atomically, unless it is there already; its size in bytes."""
    path = job_dir / COVERAGE_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_size
    content = moc_fits_bytes(job_sky(job_dir / MANIFEST_FILE, index).moc(),
                             moc_type="CATALOG")
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")  # requests race
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return len(content)


def add_coverage_result(context) -> None:  # noqa: ANN001 - JobContext
    """Publish the job's MOC as the result ``coverage``: listed now, drawn from the
    manifest when it is first asked for (:func:`draw_job_coverage`), so that a job spends
    its time on its stamps, not on a map few open (size 0 until drawn)."""
    context.add_results([ResultFile(COVERAGE_RESULT, COVERAGE_FILE, COVERAGE_MIME, 0)])
