"""A unit's manifest rows, made and rendered where the unit was cut.

The coordinating process of a catalog job handles every unit's outcomes one after the
other while the workers cut; building each stamp's :class:`ManifestRow` and its ``<TR>``
text (12 µs a stamp) there made it the slowest step of a job met again. Workers make
them instead, in parallel, and send them back with the outcomes (rows pickle as their
fields, texts as strings).
"""

from __future__ import annotations

from pathlib import Path

from vo_service.jobs.batch_cut import Outcome
from vo_service.jobs.documents import result_url
from vo_service.products import stitching
from vo_service.products.manifest import ManifestRow, format_pixel_box

MIME = {"fits": "application/fits", "png": "image/png"}


def stamp_result_id(relative: str | Path) -> str:
    """A stamp's result id: its path in the bundle with '/' replaced (one path segment)."""
    return str(relative).replace("/", "_")


def manifest_row(record, outcome: Outcome, job_url: str) -> ManifestRow:  # noqa: ANN001
    """The manifest row of one (target, image) ``outcome`` of a unit on ``record``; its
    stamps' URLs are results of the job at ``job_url``."""
    target = outcome.target
    fits_file = outcome.files.get("fits")
    png_file = outcome.files.get("png")
    primary = fits_file or png_file
    return ManifestRow(
        target.target_id, target.row + 1, target.ra, target.dec, outcome.status,
        outcome.message or None, collection=record.obs_collection,
        instrument=record.instrument_name, band=record.band, product_type=record.product_type,
        image_id=record.obs_publisher_did,
        access_url=result_url(job_url, stamp_result_id(primary[0])) if primary else None,
        content_type=(MIME["fits"] if fits_file else MIME["png"]) if primary else None,
        preview_url=result_url(job_url, stamp_result_id(png_file[0])) if png_file else None,
        file=primary[0] if primary else None,
        pixel_box=format_pixel_box(outcome.ranges), bytes=primary[1] if primary else None,
        stitched_from=" ".join(stitching.sources_described(outcome.message)) or None,
    )
