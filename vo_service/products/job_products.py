"""PSF and catalog products in catalog jobs: which records a target gets, and how one unit
of work (one PSF or catalog file, many targets) makes them.

A catalog job selects products like images (COLLECTION, INSTRUMENT, BANDNAME,
PRODUCTTYPE); a source catalog of a whole tile has no band or instrument, so those two
filters do not drop it (only its product type and collection choose it). A target gets:

- from a PSF file (``CATALOG-PSF``): the PSF at the target (``PSF=`` nearest|interpolated);
- from a catalog (``CATALOG``): the rows inside the target's stamp on the catalog's
  matching image (the first band of the job the tile has; ``COLUMNS=`` to choose).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vo_service.archive.records import ImageRecord
from vo_service.engine.psf import NEAREST
from vo_service.products.catalog_products import catalog_results, reference_image
from vo_service.products.product_options import ProductOptions
from vo_service.products.product_results import ProductResult
from vo_service.products.psf_products import psf_results
from vo_service.shapes import CenterSize


@dataclass(frozen=True)
class ProductPlan:
    """How a job makes the products of one PSF or catalog record (plain values, so that a
    unit travels to a Dask worker)."""

    kind: str  # psf | catalog
    psf_method: str = NEAREST
    columns: tuple[str, ...] = ()
    reference: ImageRecord | None = None  # catalogs: the image whose stamps hold the rows

    def key_parts(self) -> dict[str, object]:
        """What, besides the source and the target, makes a product's bytes (cache keys)."""
        if self.kind == "psf":
            return {"kind": "psf", "method": self.psf_method}
        reference = None
        if self.reference is not None:
            reference = [str(self.reference.path), self.reference.hdu, self.reference.mtime]
        return {"kind": "catalog", "columns": list(self.columns), "reference": reference}


def lookup_targets(index: object, ra: np.ndarray, dec: np.ndarray, *,
                   collections: Sequence[str], instruments: Sequence[str],
                   bandnames: Sequence[str], product_types: Sequence[str],
                   ) -> tuple[np.ndarray, np.ndarray, Sequence[ImageRecord]]:
    """(position index, record index, records) of every record a target gets: the index
    lookup with the job's filters, where band and instrument do not drop catalogs."""
    points, found, records = index.lookup_arrays(  # type: ignore[attr-defined]
        ra, dec, collection=list(collections) or None,
        product_type=list(product_types) or None)
    if not (instruments or bandnames) or not len(found):
        return points, found, records
    kept = []
    for record_index in np.unique(found):
        record = records[int(record_index)]
        if record.product_kind == "catalog" or (
                (not instruments or record.instrument_name in instruments)
                and (not bandnames or record.band in bandnames)):
            kept.append(int(record_index))
    keep = np.isin(found, np.array(kept, dtype=found.dtype))
    return points[keep], found[keep], records


def product_plan(index: object, record: ImageRecord, options: ProductOptions,
                 bandnames: Sequence[str] = ()) -> ProductPlan | None:
    """The plan of a PSF or catalog record (None for images)."""
    if record.product_kind == "psf":
        return ProductPlan("psf", psf_method=options.psf_method)
    if record.product_kind == "catalog":
        return ProductPlan("catalog", columns=options.columns,
                           reference=reference_image(index, record, bandnames))
    return None


def product_unit_results(record: ImageRecord, plan: ProductPlan,
                         regions: Sequence[CenterSize], max_pixels: int | None
                         ) -> list[ProductResult]:
    """The products of one record for many targets (file opened once)."""
    if plan.kind == "psf":
        return psf_results(record, [(r.ra, r.dec) for r in regions], plan.psf_method)
    return catalog_results(record, regions, plan.reference, plan.columns, "fits", max_pixels)
