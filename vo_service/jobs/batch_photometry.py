"""Photometry in a catalog job: what it adds to the plan's progress, to the manifest rows
(columns per target x band on the science stamp's row) and to the results (its own
VOTable, ``photometry.xml``, also in the bundle). The measuring is
``products.stamp_photometry``."""

from __future__ import annotations

from collections.abc import Sequence

from vo_service.archive.records import ImageRecord
from vo_service.engine.cutout import StampStatus
from vo_service.jobs.batch_cut import Outcome
from vo_service.jobs.service import JobContext
from vo_service.jobs.store import ResultFile
from vo_service.products.manifest import MANIFEST_MIME, Bundle, ExtraField, ManifestRow
from vo_service.products.product_options import PhotometryOptions
from vo_service.products.stamp_photometry import (
    PhotometryRow,
    PhotometryTarget,
    is_science,
    manifest_fields,
    manifest_values,
    photometry_table_bytes,
)

PHOTOMETRY_FILE = "photometry.xml"
# Stamps measured: a box inside their image (a stitched stamp's box leaves it)
MEASURED = (StampStatus.OK, StampStatus.PARTIAL)


def photometry_planned(images: Sequence[tuple[ImageRecord, int]]) -> int:
    """Units of progress photometry adds: one per (target, science image) pair, of the
    job's ``images`` (each with its count of targets)."""
    return sum(count for record, count in images if is_science(record))


def photometry_target(outcome: Outcome) -> PhotometryTarget:
    """The photometry input of one stamp outcome (its target and pixel box)."""
    target = outcome.target
    assert outcome.ranges is not None
    return PhotometryTarget(target.row, target.target_id, target.ra, target.dec,
                            tuple(tuple(r) for r in outcome.ranges))


def add_photometry(rows: list[ManifestRow], measured: Sequence[PhotometryRow],
                   options: PhotometryOptions, context: JobContext, bundle: Bundle
                   ) -> list[ExtraField]:
    """Put the measurements into the manifest rows (by catalog row and image), publish
    ``photometry.xml``; returns the manifest's extra FIELDs."""
    by_stamp = {(row.row + 1, row.image_id): row for row in measured}
    for row in rows:
        found = by_stamp.get((row.row, row.image_id))
        if found is not None:
            row.extra = manifest_values(found)
    content = photometry_table_bytes(measured, options)
    path = context.job_dir / PHOTOMETRY_FILE
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(content)
    temporary.replace(path)
    bundle.add_bytes(content, PHOTOMETRY_FILE)
    context.add_results([ResultFile("photometry", PHOTOMETRY_FILE, MANIFEST_MIME,
                                    len(content))])
    return manifest_fields(options)
