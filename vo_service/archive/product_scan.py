"""Indexing files that are not images: PSF models and source catalogs.

The archive mapping says which product types these are (``[products]`` in the mapping).
A PSF file becomes one record (``product_kind`` ``psf``, ``dataproduct_type`` ``image``,
``hdu`` the PSF image), a catalog one record (``catalog``, ``measurements``, ``hdu`` the
table). Their sky coverage is the footprint of the indexed images of the same collection
and tile when there are any (set after each indexing run, ``product_coverage``), else
the convex hull of their own positions (grid PSFs, catalog sources), padded by 2 % of its
size and at least an arcsecond. A single PSF image has no positions of its own: it needs
indexed images of its tile.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from vo_service.archive.mapping import ArchiveMapping, Assigned, header_lookup
from vo_service.archive.records import ImageRecord
from vo_service.engine import sphere
from vo_service.engine.catalog_rows import position_columns, table_hdu_of
from vo_service.engine.psf import PsfError, read_layout

DidMaker = Callable[[str, str, int | None], str]  # (collection, relative path, hdu) -> DID
PAD_FRACTION = 0.02
PAD_MIN_DEG = 1.0 / 3600.0


class ProductScanError(ValueError):
    """A PSF or catalog file that cannot be indexed; the message is the reason."""


def product_kind_of(hdul: fits.HDUList, relative: str, mapping: ArchiveMapping
                    ) -> tuple[str, int, Assigned] | None:
    """(kind, HDU, metadata) when the mapping gives an HDU of the file a product type
    listed in [products]; None for image files."""
    primary = hdul[0].header
    for index, hdu in enumerate(hdul):
        assigned = mapping.assign(relative, header_lookup(hdu.header),
                                  header_lookup(primary) if index else None)
        kind = mapping.product_kind(assigned.product_type)
        if kind is not None:
            return kind, index, assigned
    return None


def read_product_records(found: tuple[str, int, Assigned], hdul: fits.HDUList, path: Path,
                         relative: str, root: Path, stat_size: int, stat_mtime: float,
                         make_did: DidMaker) -> list[ImageRecord]:
    """The one record of a PSF or catalog file (ProductScanError says why not)."""
    kind, _, assigned = found
    collection = assigned.collection or root.name
    stem = _stem(path.name)
    if kind == "psf":
        try:
            layout = read_layout(hdul)
        except PsfError as exc:
            raise ProductScanError(f"PSF file: {exc}") from exc
        hdu = layout.image_hdu
        region = _hull(layout.ra, layout.dec) if layout.is_grid else None
        shape = layout.stamp_size
        dataproduct = "image"
        header = hdul[hdu].header
    else:
        table = table_hdu_of(hdul)
        if table is None:
            raise ProductScanError("catalog file: no table HDU with RA/Dec columns")
        hdu = table
        ra_name, dec_name = position_columns(hdul[hdu].columns.names)  # type: ignore[misc]
        data = hdul[hdu].data
        region = _hull(np.asarray(data[ra_name], dtype=np.float64),
                       np.asarray(data[dec_name], dtype=np.float64))
        shape = (int(hdul[hdu].header.get("NAXIS2", 0)),)
        dataproduct = "measurements"
        header = hdul[hdu].header
    return [_record(kind, assigned, collection, path, relative, hdu, stem, region, shape,
                    dataproduct, header.get("EXTNAME"), stat_size, stat_mtime, make_did)]


def read_votable_catalog(path: Path, relative: str, root: Path, mapping: ArchiveMapping,
                         stat_size: int, stat_mtime: float, make_did: DidMaker
                         ) -> list[ImageRecord]:
    """The record of a VOTable source catalog (its PARAMs stand in for header keywords)."""
    from astropy.io.votable import parse

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            votable = parse(str(path))
        table = votable.get_first_table()
    except Exception as exc:  # noqa: BLE001 - any parse failure is the operator's to see
        raise ProductScanError(f"not a readable VOTable: {str(exc).splitlines()[0]}") from exc
    params = {param.name.upper(): param.value for param in table.params}
    params.update({info.name.upper(): info.value for info in votable.iter_info()})
    assigned = mapping.assign(relative, header_lookup(params))
    if mapping.product_kind(assigned.product_type) != "catalog":
        raise ProductScanError("a VOTable is indexed only as a catalog product: the mapping "
                               f"gives it product type {assigned.product_type!r}, not one of "
                               "[products] catalog")
    columns = position_columns(table.array.dtype.names or ())
    if columns is None:
        raise ProductScanError("VOTable catalog: no RA/Dec columns")
    ra = np.asarray(table.array[columns[0]].filled(np.nan), dtype=np.float64)
    dec = np.asarray(table.array[columns[1]].filled(np.nan), dtype=np.float64)
    return [_record("catalog", assigned, assigned.collection or root.name, path, relative, 0,
                    _stem(path.name), _hull(ra, dec), (len(ra),), "measurements", None,
                    stat_size, stat_mtime, make_did)]


def _stem(name: str) -> str:
    lowered = name.lower()
    for suffix in (".fits.gz", ".fits.fz", ".fits", ".fit", ".fts", ".vot", ".votable",
                   ".xml"):
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _record(kind: str, assigned: Assigned, collection: str, path: Path, relative: str,
            hdu: int, stem: str, region: tuple[tuple[float, float], ...] | None,
            shape: tuple[int, ...], dataproduct: str, extname: object, size: int,
            mtime: float, make_did: DidMaker) -> ImageRecord:
    centre_ra = centre_dec = fov = None
    if region is not None:
        xyz = sphere.radec_to_xyz(*np.array(region).T)
        centre, radius = sphere.bounding_cone(xyz)
        ra, dec = sphere.xyz_to_radec(centre)
        centre_ra, centre_dec, fov = float(ra), float(dec), 2.0 * radius
    band = assigned.band_range
    return ImageRecord(
        obs_publisher_did=make_did(collection, relative, None), obs_collection=collection,
        obs_id=stem, path=path, hdu=hdu, dataproduct_type=dataproduct,
        calib_level=assigned.calib_level, instrument_name=assigned.instrument,
        facility_name=assigned.facility, target_name=assigned.target, s_ra=centre_ra,
        s_dec=centre_dec, s_fov=fov, s_region=region,
        s_xel1=shape[-1] if kind == "psf" else None,
        s_xel2=shape[0] if kind == "psf" else None,
        em_min=band.em_min if band else None, em_max=band.em_max if band else None,
        em_res_power=band.em_res_power if band else None,
        access_estsize=max(1, math.ceil(size / 1024)), band=assigned.band,
        product_type=assigned.product_type, tile=assigned.tile,
        extname=str(extname).strip() or None if extname else None, file_size=size,
        mtime=mtime, shape=shape, product_kind=kind,
    )


def _hull(ra: NDArray[np.float64], dec: NDArray[np.float64]
          ) -> tuple[tuple[float, float], ...] | None:
    """The padded convex hull (counter-clockwise ICRS vertices) of finite positions."""
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        return None
    xyz = sphere.radec_to_xyz(ra[good], dec[good])
    centre = sphere.normalise(xyz.mean(axis=0))
    east, north = sphere.tangent_basis(centre)
    x, y, front = sphere.gnomonic(xyz, centre, east, north)
    if not front.all():
        return None  # more than a hemisphere: not a tile
    points = np.stack([x, y], axis=1)
    reach = float(np.max(np.hypot(x, y))) if len(x) else 0.0
    pad = max(PAD_FRACTION * reach, math.radians(PAD_MIN_DEG))
    corners = _convex_corners(points)
    if len(corners) < 3:  # one point or a line: a square around them
        lo, hi = points.min(axis=0) - pad, points.max(axis=0) + pad
        corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    else:
        middle = corners.mean(axis=0)
        away = corners - middle
        away /= np.maximum(np.hypot(away[:, 0], away[:, 1]), 1e-15)[:, None]
        corners = corners + away * pad * math.sqrt(2.0)
    vectors = sphere.counter_clockwise(
        sphere.normalise(centre + corners[:, :1] * east + corners[:, 1:] * north))
    ra_out, dec_out = sphere.xyz_to_radec(vectors)
    return tuple((float(a), float(b)) for a, b in zip(ra_out, dec_out, strict=True))


def _convex_corners(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Convex hull corners of plane points, in order around the hull."""
    from scipy.spatial import ConvexHull, QhullError

    unique = np.unique(points, axis=0)
    if len(unique) < 3:
        return unique
    try:
        hull = ConvexHull(unique)
    except QhullError:
        return unique[:0]
    return unique[hull.vertices]
