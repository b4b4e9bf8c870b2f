"""Python API for PSF and catalog products (``vo_service.psf``, ``vo_service.catalog_rows``).

>>> import vo_service
>>> psfs = vo_service.psf((52.93, -28.09), index="state/index.sqlite", band="VIS")
>>> psfs = vo_service.psf((52.93, -28.09), files=["EUC_MER_CATALOG-PSF-VIS_TILE1.fits"],
...                       method="interpolated")
>>> rows = vo_service.catalog_rows((52.93, -28.09), 64, index="state/index.sqlite",
...                                columns=["OBJECT_ID", "MAG_VIS"])

Products come from an archive ``index`` (an ``ArchiveIndex`` or the path of its SQLite
file) or from local ``files``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from astropy.io import fits
from astropy.table import Table

from vo_service.archive.records import ImageRecord
from vo_service.engine.psf import NEAREST
from vo_service.products.catalog_products import (
    catalog_records,
    catalog_results,
    reference_image,
)
from vo_service.products.product_options import ProductError
from vo_service.products.psf_products import psf_records, psf_results
from vo_service.shapes import CenterSize

__all__ = ["catalog_rows", "psf"]


def _position(coordinates) -> tuple[float, float]:  # noqa: ANN001
    from vo_service.engine.api import _icrs_degrees

    ras, decs = _icrs_degrees(coordinates)
    if len(ras) != 1:
        raise ValueError("give one position")
    return float(ras[0]), float(decs[0])


def _index(index):  # noqa: ANN001, ANN202
    from vo_service.archive.index import ArchiveIndex

    return ArchiveIndex(index) if isinstance(index, str | Path) else index


def _file_records(files, kind: str) -> list[ImageRecord]:  # noqa: ANN001
    paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
    return [ImageRecord(str(path), "", path.stem, path, 0, product_kind=kind)
            for path in paths]


def psf(coordinates, *, index=None, files=None, band: str | Sequence[str] | None = None,  # noqa: ANN001
        collection: str | Sequence[str] | None = None,
        instrument: str | Sequence[str] | None = None, method: str = NEAREST,
        output_dir: str | Path | None = None) -> list[fits.HDUList] | list[Path]:
    """The PSF at a position from every PSF product that covers it (one per band/tile).

    ``method``: ``nearest`` (the grid PSF nearest on the sky, its pixels exactly) or
    ``interpolated`` (linear between the three grid PSFs around the position); the header
    says which grid PSFs were used, their distance and the normalisation. With
    ``output_dir`` the PSFs are written there as FITS files and their paths returned.
    """
    ra, dec = _position(coordinates)
    if (index is None) == (files is None):
        raise ValueError("give either index= or files=")
    if files is not None:
        records = _file_records(files, "psf")
    else:
        records = psf_records(_index(index), ra, dec, band=band, collection=collection,
                              instrument=instrument)
    outputs: list[tuple[ImageRecord, bytes]] = []
    for record in records:
        (result,) = psf_results(record, [(ra, dec)], method)
        if result.content is None:
            raise ProductError(f"{record.path.name}: {result.message}")
        outputs.append((record, result.content))
    return _deliver(outputs, output_dir, "psf")


def catalog_rows(coordinates, size, *, index=None, files=None,  # noqa: ANN001
                 columns: Sequence[str] = (), reference: str | Path | None = None,
                 band: str | None = None, output_dir: str | Path | None = None,
                 ) -> list[Table] | list[Path]:
    """The rows of every catalog product around a position inside a stamp of ``size``
    (pixels, or an angular Quantity) on the matching image, with ``x_stamp``/``y_stamp``.

    The matching image is an indexed image of the catalog's tile (``band`` first), or with
    ``files`` the image file ``reference``. ``columns``: the columns to keep (all by
    default).
    """
    from vo_service.engine.api import _size

    ra, dec = _position(coordinates)
    width, height, unit = _size(size)
    region = CenterSize(ra, dec, width, height, unit)
    if (index is None) == (files is None):
        raise ValueError("give either index= or files=")
    if files is not None:
        records = _file_records(files, "catalog")
        images = [None if reference is None else ImageRecord(str(reference), "", "",
                                                             Path(reference), 0)] * len(records)
    else:
        opened = _index(index)
        records = catalog_records(opened, ra, dec)
        images = [reference_image(opened, record, [band] if band else []) for record in records]
    outputs: list[tuple[ImageRecord, bytes]] = []
    for record, image in zip(records, images, strict=True):
        (result,) = catalog_results(record, [region], image, tuple(columns))
        if result.content is None:
            raise ProductError(f"{record.path.name}: {result.message}")
        outputs.append((record, result.content))
    if output_dir is not None:
        return _deliver(outputs, output_dir, "rows")  # type: ignore[return-value]
    return [Table.read(io.BytesIO(content), hdu=1) for _, content in outputs]


def _deliver(outputs: list[tuple[ImageRecord, bytes]], output_dir: str | Path | None,
             suffix: str) -> list[fits.HDUList] | list[Path]:
    if output_dir is None:
        return [fits.HDUList.fromstring(content) for _, content in outputs]
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for record, content in outputs:
        path = folder / f"{record.path.name.split('.')[0]}_{suffix}.fits"
        path.write_bytes(content)
        paths.append(path)
    return paths
