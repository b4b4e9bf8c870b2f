"""What a catalog-rows request means: the catalog products covering a target, the image
whose stamp defines the footprint, the rows inside it (engine/catalog_rows.py), cached.

The matching image of a catalog is an indexed image of the same collection and tile: of
the catalog's own band when it has one, else of the first of the bands asked for that the
tile has, else the finest-pixelled one; a science product (BGSUB, SCIENCE, ...) before
the others of its band, which share its pixel grid. The footprint is the pixel box that
image's cutout for the region has (SODA CIRCLE/POLYGON/POS, or a job's stamp size).
"""

from __future__ import annotations

from collections.abc import Sequence

from vo_service.archive.records import ImageRecord
from vo_service.cache import CachedFile, CutoutCache, make_key, source_identity
from vo_service.engine.catalog_rows import (
    CatalogRowsError,
    SourceCatalog,
    fits_table_bytes,
    rows_in_box,
    rows_in_circle,
    selection_table,
    votable_bytes,
)
from vo_service.engine.cutout import plan_cutouts
from vo_service.engine.reading import OpenImage
from vo_service.engine.spectral import CutoutError
from vo_service.products.product_options import ProductError
from vo_service.products.product_results import ProductResult, region_centre
from vo_service.shapes import Circle, Shape

KEY_VERSION = 1  # bump when the bytes of a catalog product change for the same request
SCIENCE_TYPES = ("BGSUB", "SCIENCE", "SCI", "IMAGE", "MOSAIC")
FORMATS = ("fits", "votable")


def catalog_records(index: object, ra: float, dec: float,
                    collection: str | Sequence[str] | None = None) -> list[ImageRecord]:
    """The catalog products whose coverage holds (ra, dec), sorted by ID."""
    pairs = index.lookup([ra], [dec], collection=collection)  # type: ignore[attr-defined]
    return [record for _, record in pairs if record.product_kind == "catalog"]


def reference_image(index: object, record: ImageRecord, bands: Sequence[str] = ()
                    ) -> ImageRecord | None:
    """The image whose stamps a catalog's rows are placed on (see the module docstring)."""
    if record.tile is None:
        return None
    images = index.records(obs_collection=record.obs_collection,  # type: ignore[attr-defined]
                           tile=record.tile, product_kind=None, dataproduct_type="image")
    if not images:
        return None
    wanted = ([record.band] if record.band else []) + [b for b in bands if b]

    def rank(image: ImageRecord) -> tuple:
        band_rank = wanted.index(image.band) if image.band in wanted else len(wanted)
        science = 0 if (image.product_type or "").upper() in SCIENCE_TYPES else 1
        return (band_rank, image.s_resolution or float("inf"), science,
                image.obs_publisher_did)

    return min(images, key=rank)


def catalog_key(record: ImageRecord, region: Shape, reference: ImageRecord | None,
                columns: Sequence[str], fmt: str) -> str:
    """Cache key of a catalog-rows product (sources as they are on disk now)."""
    from vo_service.engine.cutout import describe_region

    return make_key({
        "product": "catalog-rows", "version": KEY_VERSION,
        "source": source_identity(record.path, record.hdu),
        "reference": None if reference is None else source_identity(reference.path,
                                                                    reference.hdu),
        "region": describe_region(region), "columns": list(columns), "format": fmt})


def catalog_results(record: ImageRecord, regions: Sequence[Shape],
                    reference: ImageRecord | None, columns: Sequence[str] = (),
                    fmt: str = "fits", max_pixels: int | None = None) -> list[ProductResult]:
    """The rows of one catalog inside each region's stamp (catalog opened once)."""
    try:
        with SourceCatalog(record.path, None) as catalog:
            names = catalog.check_columns(columns)
            if reference is None:
                return [_circle_rows(catalog, record, index, region, names, fmt)
                        for index, region in enumerate(regions)]
            return _stamp_rows(catalog, record, regions, reference, names, fmt, max_pixels)
    except CatalogRowsError as exc:
        return [ProductResult(i, "error", str(exc)) for i in range(len(regions))]
    except (CutoutError, OSError) as exc:
        return [ProductResult(i, "error", f"{type(exc).__name__}: {exc}")
                for i in range(len(regions))]


def _stamp_rows(catalog: SourceCatalog, record: ImageRecord, regions: Sequence[Shape],
                reference: ImageRecord, names: list[str], fmt: str,
                max_pixels: int | None) -> list[ProductResult]:
    with OpenImage(reference.path, reference.hdu) as image:
        plans = plan_cutouts(image, list(regions), max_pixels=max_pixels)
        wcs = image.wcs
    results = []
    for index, (region, plan) in enumerate(zip(regions, plans, strict=True)):
        if plan.box is None:
            message = plan.message or "the region does not overlap the matching image"
            results.append(ProductResult(index, plan.status, message))
            continue
        ranges = plan.box.ranges[:2]
        selection = rows_in_box(catalog, wcs, ranges)
        table = selection_table(catalog, selection, names)
        (x0, x1), (y0, y1) = ranges
        cards = _cards(record, region, len(table)) + [
            ("REFIMAGE", reference.obs_publisher_did, "image whose stamp is the footprint"),
            ("CUTX0", x0 + 1, "stamp box on REFIMAGE (1-based, inclusive)"),
            ("CUTX1", x1, ""), ("CUTY0", y0 + 1, ""), ("CUTY1", y1, "")]
        results.append(ProductResult(index, plan.status, "", _encode(table, cards, fmt),
                                     None, plan.box))
    return results


def _circle_rows(catalog: SourceCatalog, record: ImageRecord, index: int, region: Shape,
                 names: list[str], fmt: str) -> ProductResult:
    if not isinstance(region, Circle):
        return ProductResult(index, "error", "no indexed image of this catalog's tile to "
                             "define the stamp; ask with a CIRCLE (rows within it)")
    selection = rows_in_circle(catalog, region.ra, region.dec, region.radius)
    table = selection_table(catalog, selection, names)
    return ProductResult(index, "ok", "", _encode(table, _cards(record, region, len(table)),
                                                  fmt))


def _cards(record: ImageRecord, region: Shape, rows: int) -> list[tuple[str, object, str]]:
    ra, dec = region_centre(region)
    return [("ORIGFILE", record.path.name, "the catalog file"),
            ("ORIG_EXT", record.hdu, "its table HDU"),
            ("RA_TARG", ra, "[deg] target right ascension (ICRS)"),
            ("DEC_TARG", dec, "[deg] target declination (ICRS)"),
            ("NROWS", rows, "catalog rows inside the footprint")]


def _encode(table, cards: list[tuple[str, object, str]], fmt: str) -> bytes:  # noqa: ANN001
    return votable_bytes(table, cards) if fmt == "votable" else fits_table_bytes(table, cards)


def catalog_bytes(record: ImageRecord, region: Shape, reference: ImageRecord | None,
                  columns: Sequence[str], fmt: str, max_pixels: int | None = None) -> bytes:
    """The rows of one catalog in one region (ProductError when it cannot answer; a
    region off the matching image is a ProductError saying so)."""
    (result,) = catalog_results(record, [region], reference, columns, fmt, max_pixels)
    if result.content is None:
        raise ProductError(f"{record.obs_publisher_did}: {result.message}")
    return result.content


def fetch_catalog_rows(cache: CutoutCache, record: ImageRecord, region: Shape,
                       reference: ImageRecord | None, columns: Sequence[str], fmt: str,
                       max_pixels: int | None = None) -> tuple[CachedFile, bool, str]:
    """The cached catalog-rows product (computed on a miss): open file, hit flag, key."""
    key = catalog_key(record, region, reference, columns, fmt)
    cached, hit = cache.open_or_compute(key, lambda: catalog_bytes(
        record, region, reference, columns, fmt, max_pixels))
    return cached, hit, key
