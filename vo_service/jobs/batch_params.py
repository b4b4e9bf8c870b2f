"""Parameters of a catalog (UPLOAD) batch job, checked at creation (DALI UPLOAD, §3.4.5).

``UPLOAD=<name>,param:<name>`` names the multipart part holding the catalog (VOTable, FITS
table or CSV). Every parameter is documented in ``docs/async.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vo_service.catalogs import Catalog, CatalogError, read_catalog
from vo_service.config import Limits
from vo_service.errors import UsageError
from vo_service.jobs.service import Upload
from vo_service.jobs.store import Parameter
from vo_service.products import stitching
from vo_service.products.catalog_products import SCIENCE_TYPES
from vo_service.products.file_versions import PerVersion
from vo_service.products.parameters import parse_float, parse_int, parse_interval
from vo_service.products.product_options import (
    ProductOptions,
    parse_columns,
    parse_photometry,
    parse_psf_method,
)

MULTI_VALUED = {"COLLECTION", "INSTRUMENT", "BANDNAME", "PRODUCTTYPE", "TIME", "COLUMNS",
                "APERTURE"}
SINGLE_VALUED = {"UPLOAD", "RA_COLUMN", "DEC_COLUMN", "ID_COLUMN", "SIZE_COLUMN", "SIZE",
                 "SIZE_UNIT", "RESPONSEFORMAT", "WORKERS", "STITCH", "PSF", "PHOTOMETRY",
                 "APERTURE_UNIT", "ANNULUS"}
SIZE_UNITS = ("pix", "arcsec", "arcmin", "deg")
DEFAULT_SIZE_PIX = 64.0
# catalogs read lately: a job created and run at once reads its upload once
_READ: PerVersion[Catalog] = PerVersion(2)
FORMATS = {"fits": ("fits",), "application/fits": ("fits",), "png": ("png",),
           "image/png": ("png",), "both": ("fits", "png"), "fits,png": ("fits", "png"),
           "fits+png": ("fits", "png")}


@dataclass(frozen=True)
class BatchRequest:
    """A catalog batch job's parameters, parsed."""

    upload_name: str
    ra_column: str | None
    dec_column: str | None
    id_column: str | None
    size_column: str | None
    size: float | None
    size_unit: str
    collections: list[str]
    instruments: list[str]
    bandnames: list[str]
    product_types: list[str]
    formats: tuple[str, ...]
    workers: int
    times: tuple[tuple[float, float], ...] = ()  # TIME intervals (MJD): images meeting any
    stitch: str | None = None  # STITCH: resampling method of stitched stamps, None = off
    products: ProductOptions = ProductOptions()  # PSF, COLUMNS, PHOTOMETRY (docs/products.md)


def parse_upload(value: str) -> str:
    """The multipart part named by ``UPLOAD=<table>,param:<part>``."""
    table, comma, uri = value.partition(",")
    if not comma or not table.strip():
        raise UsageError(f"UPLOAD must be '<name>,param:<name>', got {value!r}")
    if not uri.strip().lower().startswith("param:"):
        raise UsageError("UPLOAD: only inline uploads are accepted ('<name>,param:<part>' "
                         "with the file in that multipart part); URLs are not fetched")
    part = uri.strip()[len("param:"):]
    if not part:
        raise UsageError(f"UPLOAD: no part name after 'param:' in {value!r}")
    return part


def parse_batch_request(parameters: Sequence[Parameter], limits: Limits, *,
                        complete: bool = True) -> BatchRequest:
    """Parse and check the parameters of a batch job; UsageError says what to fix.

    With ``complete=False`` a missing UPLOAD is allowed (``upload_name`` is then empty): a
    PENDING job may be built up with ``POST …/parameters``; RUN needs it.
    """
    values: dict[str, list[str]] = {}
    for parameter in parameters:
        values.setdefault(parameter.name.upper(), []).append(parameter.value)
    unknown = sorted(set(values) - MULTI_VALUED - SINGLE_VALUED)
    if unknown:
        raise UsageError(f"unknown parameter(s) {', '.join(unknown)} for a catalog job; see "
                         "docs/async.md for UPLOAD, RA_COLUMN, DEC_COLUMN, ID_COLUMN, "
                         "SIZE_COLUMN, SIZE, SIZE_UNIT, COLLECTION, INSTRUMENT, BANDNAME, "
                         "PRODUCTTYPE, TIME, RESPONSEFORMAT, WORKERS, STITCH, and "
                         "docs/products.md for PSF, COLUMNS, PHOTOMETRY, APERTURE, "
                         "APERTURE_UNIT, ANNULUS")
    for name in SINGLE_VALUED:
        if len(values.get(name, [])) > 1:
            raise UsageError(f"{name} is single-valued but was given {len(values[name])} "
                             "times; send it once")

    def one(name: str) -> str | None:
        return values.get(name, [None])[0]

    size = None
    if one("SIZE") is not None:
        size = parse_float("SIZE", one("SIZE"))
        if not (math.isfinite(size) and size > 0):
            raise UsageError(f"SIZE must be a positive number, got {one('SIZE')!r}")
    unit = (one("SIZE_UNIT") or "pix").lower()
    if unit in ("pixel", "pixels"):
        unit = "pix"
    if unit not in SIZE_UNITS:
        raise UsageError(f"SIZE_UNIT must be one of {', '.join(SIZE_UNITS)}, got {unit!r}")
    if size is not None and unit == "pix" and size * size > limits.max_cutout_pixels:
        raise UsageError(f"SIZE {size:g} pix makes stamps larger than the limit of "
                         f"{limits.max_cutout_pixels} pixels")
    format_text = (one("RESPONSEFORMAT") or "fits").strip().lower()
    if format_text not in FORMATS:
        raise UsageError(f"RESPONSEFORMAT must be FITS, PNG or both, got {one('RESPONSEFORMAT')!r}")
    workers = limits.job_workers
    if one("WORKERS") is not None:
        workers = parse_int("WORKERS", one("WORKERS"), minimum=1)
        if workers > limits.max_job_workers:
            raise UsageError(f"WORKERS must be between 1 and {limits.max_job_workers}, "
                             f"got {workers}")
    try:
        stitch = stitching.parse_stitch(one("STITCH"))
        products = ProductOptions(  # a ProductError is a ValueError too
            parse_psf_method(one("PSF")), parse_columns(values.get("COLUMNS", [])),
            parse_photometry(one("PHOTOMETRY"), values.get("APERTURE", []),
                             one("APERTURE_UNIT"), one("ANNULUS")))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    product_types = values.get("PRODUCTTYPE", [])
    if products.photometry and product_types and not any(
            value.upper() in SCIENCE_TYPES for value in product_types):
        raise UsageError("PHOTOMETRY measures on science stamps: add PRODUCTTYPE="
                         f"{SCIENCE_TYPES[0]} (or another of {', '.join(SCIENCE_TYPES)})")
    upload = one("UPLOAD")
    if upload is None and complete:
        raise UsageError("a catalog job needs UPLOAD=<name>,param:<name> with the catalog in "
                         "the multipart part <name>; add both with POST …/parameters")
    return BatchRequest(
        upload_name=parse_upload(upload) if upload is not None else "",
        ra_column=one("RA_COLUMN"), dec_column=one("DEC_COLUMN"), id_column=one("ID_COLUMN"),
        size_column=one("SIZE_COLUMN"), size=size, size_unit=unit,
        collections=values.get("COLLECTION", []), instruments=values.get("INSTRUMENT", []),
        bandnames=values.get("BANDNAME", []), product_types=values.get("PRODUCTTYPE", []),
        formats=FORMATS[format_text], workers=workers,
        times=tuple(parse_interval("TIME", v, allow_scalar=True) for v in values.get("TIME", [])),
        stitch=stitch,
        products=products,
    )


def uploaded(request: BatchRequest, uploads: Mapping[str, Upload]) -> Upload | None:
    """The file UPLOAD names, if it came (part names are matched case-insensitively)."""
    return uploads.get(request.upload_name.upper()) or uploads.get(request.upload_name)


def load_catalog(request: BatchRequest, uploads: Mapping[str, Upload], limits: Limits) -> Catalog:
    """Read the uploaded catalog with the requested columns; UsageError if unusable."""
    upload = uploaded(request, uploads)
    if upload is None:
        raise UsageError(f"UPLOAD names the part {request.upload_name!r} but the request has "
                         "no file in a multipart part of that name")
    options = {"filename": upload.filename, "ra_column": request.ra_column,
               "dec_column": request.dec_column, "id_column": request.id_column,
               "size_column": request.size_column, "max_rows": limits.max_upload_rows,
               "max_columns": limits.max_upload_columns}
    try:  # read when the job is made (to refuse a bad catalog at once), kept for its run
        catalog = _READ.get(upload.path, lambda path: read_catalog(path, **options),
                            how=tuple(options.items()))
    except OSError as exc:  # the job's folder is gone (deleted meanwhile)
        raise UsageError(f"UPLOAD {request.upload_name}: the uploaded file cannot be "
                         f"read ({exc.strerror}); upload it again") from exc
    except CatalogError as exc:
        raise UsageError(f"UPLOAD {request.upload_name}: {exc}") from exc
    if len(catalog) == 0:
        raise UsageError(f"UPLOAD {request.upload_name}: the catalog has no rows")
    if len(catalog.row_problems) == len(catalog):  # a job could produce nothing at all
        first = "; ".join(f"row {row + 1}: {text}"
                          for row, text in list(catalog.row_problems.items())[:3])
        raise UsageError(f"UPLOAD {request.upload_name}: no row of the catalog is usable "
                         f"({first}); fix the rows or choose the RA/Dec columns")
    return catalog
