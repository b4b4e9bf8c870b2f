"""Where a catalog job's results lie on the sky: its targets and its stamps' footprints.

Made from the manifest's rows (the job passes the rows it just wrote; the web page reads
them back from the file, a public, stable document), so that the MOC (``coverage.fits``, a
result of every catalog job) and the region files the web page offers describe exactly
what the manifest lists. A stamp's footprint is its pixel box mapped through the source
image's WCS (distortions included), one WCS read and one call per source image.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
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
from vo_service.archive.records import ImageRecord
from vo_service.archive.region_files import LabelledPoint, LabelledPolygon
from vo_service.engine.cutout import StampStatus
from vo_service.jobs.store import ResultFile
from vo_service.products.manifest import ManifestRow, read_manifest

log = logging.getLogger(__name__)
COVERAGE_RESULT = "coverage"
COVERAGE_FILE = "coverage.fits"
COVERAGE_MIME = "application/fits"
STAMP_STATUSES = (StampStatus.OK, StampStatus.PARTIAL)  # manifest rows with a stamp
_ARCSEC = {"arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0}  # angular SIZE_UNITs
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
    """The targets and stamp footprints listed in a job's manifest."""
    return sky_of_rows(read_manifest(manifest_path), index)


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


def planned_order(images: Iterable[tuple[ImageRecord, Sequence[tuple[float, str]]]]) -> int:
    """The order of a job's coverage MOC, chosen as it starts from what it plans: the pixel
    scales of its images, and the summed edges of its stamps, each the square of its
    requested size ((size, unit) per target); a stamp cut short at an image edge is
    smaller, so the order errs coarse (:func:`vo_service.archive.coverage.coverage_order`)."""
    scales: list[float | None] = []
    perimeter = 0.0
    for record, sizes in images:
        scale = pixel_scale_arcsec(record)
        scales.append(scale)
        for size, unit in sizes:
            side = size * (scale or 0.0) if unit == "pix" else size * _ARCSEC[unit]
            perimeter += 4.0 * side
    return coverage_order(scales, perimeter)


def unit_coverage(record: ImageRecord, pixel_boxes: Sequence[str], order: int
                  ) -> np.ndarray:
    """The MOC at ``order`` of stamps on one image (their FITS sections, as the manifest
    writes them), as depth-29 ranges (plain numpy: it travels back from worker
    processes): the footprints the whole-manifest build draws for the same rows. Made
    where the unit was cut, so a job's MOC is drawn on its workers, in parallel."""
    corners, _ = box_corners(list(pixel_boxes))
    celestial = load_celestial_image(record.path, record.hdu, record.mtime) \
        if len(corners) else None  # a unit without stamps reads no WCS
    if celestial is None:
        return MOC.new_empty(order).to_depth29_ranges
    ras, decs = celestial.pixel_to_icrs(corners[..., 0].ravel(), corners[..., 1].ravel())
    vertices = np.stack([ras.reshape(-1, 4), decs.reshape(-1, 4)], axis=-1)
    finite = np.isfinite(vertices).all(axis=(1, 2))
    # one thread: units run side by side on every core already
    return polygons_moc(list(vertices[finite]), order, n_threads=1).to_depth29_ranges


def write_job_coverage(manifest_path: Path, index,  # noqa: ANN001 - ArchiveIndex
                       rows: Sequence[ManifestRow] | None = None,
                       drawn: tuple[int, Sequence[np.ndarray]] | None = None
                       ) -> tuple[str, int]:
    """Write ``coverage.fits`` (the MOC of the job's targets and stamps) next to the
    manifest, atomically; returns (file name, size in bytes). ``rows``: the manifest's
    rows when the caller has them (else they are read from the file). ``drawn``: (order,
    every unit's :func:`unit_coverage`) when the units drew their stamps already; then
    only the targets are added here."""
    if drawn is not None and rows is not None:
        order, parts = drawn
        targets = [(row.ra, row.dec) for row in rows
                   if row.ra is not None and row.dec is not None]
        ras, decs = ([t[0] for t in targets], [t[1] for t in targets])
        moc = union([points_moc(ras, decs, order),
                     *(MOC.from_depth29_ranges(order, part) for part in parts)], order)
    else:
        sky = job_sky(manifest_path, index) if rows is None else sky_of_rows(rows, index)
        moc = sky.moc()
    content = moc_fits_bytes(moc, moc_type="CATALOG")
    path = manifest_path.with_name(COVERAGE_FILE)
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return COVERAGE_FILE, len(content)


def add_coverage_result(context, manifest_path: Path, index,  # noqa: ANN001
                        rows: Sequence[ManifestRow] | None = None,
                        drawn: tuple[int, Sequence[np.ndarray]] | None = None) -> None:
    """Write the job's MOC and publish it as the result ``coverage`` (``rows``: the
    manifest's, if at hand; ``drawn``: see :func:`write_job_coverage`). A MOC that cannot
    be built (a bug) is logged and left out: it must not cost the job its stamps; a disk
    failure (OSError) ends the job like any other."""
    try:
        name, size = write_job_coverage(manifest_path, index, rows, drawn)
    except OSError:
        raise
    except Exception:
        log.exception("job %s: its coverage MOC could not be built", context.job_id)
        return
    context.add_results([ResultFile(COVERAGE_RESULT, name, COVERAGE_MIME, size)])
