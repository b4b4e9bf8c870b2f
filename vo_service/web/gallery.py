"""The gallery of a finished catalog job: manifest rows grouped per target, and pictures of
its FITS stamps rendered with the engine's preview and composite functions.

One row per target, one column per band x product type (bands blue to red, products in the
usual order). A cell holds every stamp of that target in that band and product (neighbouring
tiles overlap, so a target can have several); the first ``ok`` one is shown.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from vo_service.engine.composite import render_composite
from vo_service.engine.cutout import StampStatus
from vo_service.engine.physical import header_scaling, physical_values
from vo_service.engine.preview import PreviewOptions
from vo_service.jobs.unit_rows import stamp_result_id
from vo_service.products.file_versions import PerVersion
from vo_service.products.manifest import ManifestRow, read_manifest
from vo_service.web.choices import product_rank

STATUS_RANK = {StampStatus.OK: 0, StampStatus.STITCHED: 0,  # which stamp of a cell is shown
               StampStatus.PARTIAL: 1}
FITS_MIME = "application/fits"
# Lupton linear range for gallery composites: the engine's 0.5 shows the sky noise of faint
# targets as coloured speckle at stamp sizes; 1.0 keeps the noise dark and sources in colour.
COMPOSITE_STRETCH = 1.0
_galleries: PerVersion[Gallery] = PerVersion(4)  # the most recently used jobs' galleries


@dataclass(frozen=True, slots=True)
class GalleryColumn:
    """One column of the gallery: a band and a product type."""

    band: str
    product_type: str

    @property
    def key(self) -> str:
        """The column's key in the page's JSON (``cells`` of a target), ``band|product``."""
        return f"{self.band}|{self.product_type}"

    def to_json(self) -> dict[str, str]:
        """The column as the page's JSON has it."""
        return {"key": self.key, "band": self.band, "product_type": self.product_type}


@dataclass(frozen=True, slots=True)
class GalleryStamp:
    """One stamp in a gallery cell (a target in one band and product type), or why the
    image gave none."""

    result_id: str | None  # the job result of the stamp, None without one
    status: StampStatus
    message: str | None
    image_id: str | None
    access_url: str | None
    preview_url: str | None
    content_type: str | None
    pixel_box: str | None

    @property
    def is_fits(self) -> bool:
        """The stamp is a FITS file (thumbnails and composites are made from those)."""
        return self.content_type == FITS_MIME

    def to_json(self) -> dict[str, str | None]:
        """The stamp as the page's JSON has it."""
        return {"result_id": self.result_id, "status": self.status, "message": self.message,
                "image_id": self.image_id, "access_url": self.access_url,
                "preview_url": self.preview_url, "content_type": self.content_type,
                "pixel_box": self.pixel_box}


@dataclass(frozen=True, slots=True)
class GalleryNote:
    """Why a target has a row without any image (a bad catalog row, or inside no image)."""

    status: StampStatus
    message: str

    def to_json(self) -> dict[str, str]:
        """The note as the page's JSON has it."""
        return {"status": self.status, "message": self.message}


@dataclass(slots=True)
class GalleryTarget:
    """One row of the gallery: a target, its stamps per column, and notes."""

    row: int  # catalog row, from 1
    target_id: str
    ra: float | None
    dec: float | None
    cells: dict[GalleryColumn, list[GalleryStamp]] = field(default_factory=dict)
    notes: list[GalleryNote] = field(default_factory=list)

    def stamps(self, column: GalleryColumn) -> list[GalleryStamp]:
        """The target's stamps in ``column``, the one to show first ([] if none)."""
        return self.cells.get(column, [])

    def to_json(self) -> dict[str, object]:
        """The target as the page's JSON has it: cells keyed ``band|product``."""
        return {"row": self.row, "target_id": self.target_id, "ra": self.ra, "dec": self.dec,
                "cells": {column.key: [stamp.to_json() for stamp in stamps]
                          for column, stamps in self.cells.items()},
                "notes": [note.to_json() for note in self.notes]}


@dataclass
class Gallery:
    """A job's manifest as the page shows it."""

    columns: list[GalleryColumn]  # bands blue to red, products in the usual order
    bands: list[str]  # blue to red
    targets: list[GalleryTarget]  # by catalog row
    composite_bands: list[str]  # three bands, red first, or [] without a composite
    composite_product: str | None

    def page(self, offset: int, limit: int) -> dict:
        """JSON-ready slice of the targets (the keys the page's JavaScript reads)."""
        return {"columns": [column.to_json() for column in self.columns], "bands": self.bands,
                "composite": {"bands": self.composite_bands,
                              "product_type": self.composite_product},
                "total_targets": len(self.targets), "offset": offset, "limit": limit,
                "targets": [target.to_json()
                            for target in self.targets[offset:offset + limit]]}

    def target(self, row: int) -> GalleryTarget | None:
        """The target of catalog row ``row`` (1-based), if any."""
        return next((t for t in self.targets if t.row == row), None)

    def composite_stamps(self, target: GalleryTarget) -> list[list[GalleryStamp]]:
        """The target's stamps of the composite's bands (red, green, blue)."""
        return [target.stamps(GalleryColumn(band, self.composite_product or ""))
                for band in self.composite_bands]


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text or None


def _number(value: object) -> float | None:
    return None if value is None else float(value)


def build_gallery(rows: Sequence[ManifestRow], band_wavelength: dict[str, float]) -> Gallery:
    """Group manifest rows per target and per band x product type."""
    targets: dict[int, GalleryTarget] = {}
    columns: dict[tuple[str, str], GalleryColumn] = {}  # one instance per column
    for row in rows:
        number = int(row.row)
        target = targets.get(number)
        if target is None:
            target = targets[number] = GalleryTarget(
                number, _text(row.target_id) or str(number), _number(row.ra), _number(row.dec))
        band, product = _text(row.band), _text(row.product_type)
        message = _text(row.message)
        if band is None and product is not None and row.image_id:
            band = ""  # a product of a whole tile (a source catalog): a column of its own
        if band is None or product is None:  # a bad row or a target outside every image
            target.notes.append(GalleryNote(row.status, message or row.status))
            continue
        column = columns.get((band, product))
        if column is None:
            column = columns[band, product] = GalleryColumn(band, product)
        file = _text(row.file)
        target.cells.setdefault(column, []).append(GalleryStamp(
            stamp_result_id(file) if file else None, row.status, message, _text(row.image_id),
            _text(row.access_url), _text(row.preview_url), _text(row.content_type),
            _text(row.pixel_box)))
    for target in targets.values():
        for stamps in target.cells.values():
            stamps.sort(key=lambda s: STATUS_RANK.get(s.status, 9))
    bands = sorted({band for band, _ in columns if band},
                   key=lambda b: (band_wavelength.get(b, float("inf")), b))
    ordered = sorted(columns.values(),
                     key=lambda c: (bands.index(c.band) if c.band else len(bands),
                                    product_rank(c.product_type)))
    products = sorted({product for _, product in columns}, key=product_rank)
    chosen = _composite_bands(bands)
    product = "BGSUB" if "BGSUB" in products else (products[0] if products else None)
    return Gallery(columns=ordered, bands=bands, targets=[targets[n] for n in sorted(targets)],
                   composite_bands=chosen, composite_product=product if chosen else None)


def _composite_bands(bands: list[str]) -> list[str]:
    """Red, green, blue: the three bands, or the reddest, middle and bluest of more."""
    if len(bands) < 3:
        return []
    return [bands[-1], bands[len(bands) // 2], bands[0]]


def load_gallery(manifest: Path, band_wavelength: dict[str, float]) -> Gallery:
    """The gallery of a manifest, parsed once per file version (a few kept in memory)."""
    return _galleries.get(manifest, lambda path: build_gallery(read_manifest(path),
                                                               band_wavelength))


def stamp_pixels(stamp: bytes) -> np.ndarray:
    """Physical pixel values of a FITS stamp's bytes (first HDU with an image;
    BSCALE/BZERO applied, BLANK as NaN)."""
    with fits.open(io.BytesIO(stamp), memmap=False, do_not_scale_image_data=True) as hdus:
        for hdu in hdus:
            if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                return physical_values(np.asarray(hdu.data), **header_scaling(hdu.header))
    raise ValueError("the stamp holds no image")


def render_thumbnail(stamp: bytes, options: PreviewOptions) -> bytes:
    """PNG/JPEG of a FITS stamp with the chosen stretch, limits and inversion."""
    return options.render(stamp_pixels(stamp))


def render_colour(stamps: list[bytes], size: int | None) -> bytes:
    """Lupton RGB PNG of three FITS stamps (red, green, blue)."""
    red, green, blue = (stamp_pixels(stamp) for stamp in stamps)
    return render_composite(red, green, blue, stretch=COMPOSITE_STRETCH, size=size)
