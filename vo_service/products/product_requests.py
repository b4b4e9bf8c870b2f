"""A SODA sync request for a PSF or catalog product (an ID the index marks with a
``product_kind``): one ID, one region; the answer is cached like a cutout.

- PSF: the PSF at the region's centre (``PSF=nearest|interpolated``), FITS; a centre
  outside the product's coverage is "no overlap" (204).
- catalog: the rows inside the stamp the region cuts from the catalog's matching image
  (``COLUMNS=``), FITS table or VOTable; no stamp there is "no overlap" (204).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vo_service.archive.records import ImageRecord
from vo_service.cache import CachedFile, CutoutCache
from vo_service.engine import sphere
from vo_service.products.catalog_products import (
    catalog_key,
    catalog_results,
    reference_image,
)
from vo_service.products.product_options import ProductError, ProductOptions
from vo_service.products.product_results import region_centre
from vo_service.products.psf_products import fetch_psf
from vo_service.shapes import Shape

FITS_MIME = "application/fits"
VOTABLE_MIMES = ("application/x-votable+xml", "text/xml", "application/votable+xml")


class NoProductOverlap(Exception):
    """The region's target lies outside the product (SODA answers 204)."""


def is_product_request(records: Sequence[ImageRecord]) -> bool:
    """Whether a sync request names PSF or catalog products (ProductError when it mixes
    them with images or asks for several)."""
    kinds = [record.product_kind for record in records]
    if not any(kinds):
        return False
    if len(records) > 1:
        raise ProductError("a PSF or catalog product is answered one ID at a time: send one "
                           "ID (and no image IDs) per request, or use /async")
    return True


def fetch_product_answer(cache: CutoutCache, index: object, record: ImageRecord,
                         regions: Sequence[Shape], mime: str, options: ProductOptions,
                         max_pixels: int) -> tuple[CachedFile, bool, str]:
    """The cached answer for one PSF or catalog ID: open file, hit flag, key."""
    if len(regions) != 1:
        raise ProductError(f"{record.obs_publisher_did} is a {record.product_kind} product: "
                           "give exactly one CIRCLE, POLYGON or POS (its target"
                           + (" and stamp)" if record.product_kind == "catalog" else ")"))
    region = regions[0]
    if record.product_kind == "psf":
        if mime != FITS_MIME:
            raise ProductError("a PSF is answered as FITS: RESPONSEFORMAT=application/fits")
        ra, dec = region_centre(region)
        if not _covers(record, ra, dec):
            raise NoProductOverlap()
        return fetch_psf(cache, record, ra, dec, options.psf_method)
    fmt = "votable" if mime in VOTABLE_MIMES else "fits"
    if mime not in (FITS_MIME, *VOTABLE_MIMES):
        raise ProductError("catalog rows are answered as a FITS table or a VOTable: "
                           "RESPONSEFORMAT=application/fits or application/x-votable+xml")
    reference = reference_image(index, record)
    key = catalog_key(record, region, reference, options.columns, fmt)

    def compute() -> bytes:
        (result,) = catalog_results(record, [region], reference, options.columns, fmt,
                                    max_pixels)
        if result.status == "no-overlap":
            raise NoProductOverlap()
        if result.content is None:
            raise ProductError(f"{record.obs_publisher_did}: {result.message}")
        return result.content

    cached, hit = cache.open_or_compute(key, compute)
    return cached, hit, key


def _covers(record: ImageRecord, ra: float, dec: float) -> bool:
    """Whether the product's coverage holds the position (no coverage: everywhere)."""
    if record.s_region is None:
        return True
    vertices = sphere.radec_to_xyz(*np.array(record.s_region).T)
    return bool(sphere.points_in_polygon(sphere.radec_to_xyz([ra], [dec]), vertices)[0])
