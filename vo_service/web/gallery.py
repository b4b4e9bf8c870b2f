"""The gallery of a finished catalog job: manifest rows grouped per target, and pictures of
its FITS stamps rendered with the engine's preview and composite functions.

One row per target, one column per band x product type (bands blue to red, products in the
usual order). A cell holds every stamp of that target in that band and product (neighbouring
tiles overlap, so a target can have several); the first ``ok`` one is shown.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.votable import parse_single_table

from vo_service.engine.composite import render_composite
from vo_service.engine.preview import PreviewOptions
from vo_service.web.choices import product_rank

STATUS_RANK = {"ok": 0, "partial": 1}
# Lupton linear range for gallery composites: the engine's 0.5 shows the sky noise of faint
# targets as coloured speckle at stamp sizes; 1.0 keeps the noise dark and sources in colour.
COMPOSITE_STRETCH = 1.0
_CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, int], Gallery] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass
class Gallery:
    """A job's manifest as the page shows it."""

    columns: list[dict]  # {"key", "band", "product_type"}
    bands: list[str]  # blue to red
    targets: list[dict]  # {"row", "target_id", "ra", "dec", "cells": {key: [stamp]}, "notes"}
    composite_bands: list[str]  # three bands, red first, or [] without a composite
    composite_product: str | None

    def page(self, offset: int, limit: int) -> dict:
        """JSON-ready slice of the targets."""
        return {"columns": self.columns, "bands": self.bands,
                "composite": {"bands": self.composite_bands,
                              "product_type": self.composite_product},
                "total_targets": len(self.targets), "offset": offset, "limit": limit,
                "targets": self.targets[offset:offset + limit]}

    def target(self, row: int) -> dict | None:
        """The target of catalog row ``row`` (1-based), if any."""
        return next((t for t in self.targets if t["row"] == row), None)


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text or None


def _number(value: object) -> float | None:
    return None if value is None else float(value)


def manifest_rows(path: Path) -> list[dict]:
    """Rows of a manifest VOTable as dicts (masked cells -> None)."""
    table = parse_single_table(str(path)).to_table()
    columns = []
    for name in table.colnames:  # column-wise: a manifest has tens of thousands of rows
        column = table[name]
        values = np.asarray(column).tolist()
        masked = np.ma.getmaskarray(column).tolist()
        columns.append([None if hidden else value
                        for value, hidden in zip(values, masked, strict=True)])
    return [dict(zip(table.colnames, cells, strict=True)) for cells in zip(*columns, strict=True)]


def build_gallery(rows: list[dict], band_wavelength: dict[str, float]) -> Gallery:
    """Group manifest rows per target and per band x product type."""
    targets: dict[int, dict] = {}
    columns: set[tuple[str, str]] = set()
    for row in rows:
        number = int(row["row"])
        target = targets.setdefault(number, {
            "row": number, "target_id": _text(row["target_id"]) or str(number),
            "ra": _number(row["ra"]), "dec": _number(row["dec"]), "cells": {}, "notes": []})
        band, product = _text(row.get("band")), _text(row.get("product_type"))
        status, message = _text(row.get("status")) or "", _text(row.get("message"))
        if band is None and product is not None and row.get("image_id"):
            band = ""  # a product of a whole tile (a source catalog): a column of its own
        if band is None or product is None:  # a bad row or a target outside every image
            target["notes"].append({"status": status, "message": message or status})
            continue
        columns.add((band, product))
        key = f"{band}|{product}"
        target["cells"].setdefault(key, []).append({
            "result_id": _result_id(_text(row.get("file"))), "status": status,
            "message": message, "image_id": _text(row.get("image_id")),
            "access_url": _text(row.get("access_url")),
            "preview_url": _text(row.get("preview_url")),
            "content_type": _text(row.get("content_type")),
            "pixel_box": _text(row.get("pixel_box"))})
    for target in targets.values():
        for stamps in target["cells"].values():
            stamps.sort(key=lambda s: STATUS_RANK.get(s["status"], 9))
    bands = sorted({band for band, _ in columns if band},
                   key=lambda b: (band_wavelength.get(b, float("inf")), b))
    ordered = sorted(columns, key=lambda c: (bands.index(c[0]) if c[0] else len(bands),
                                             product_rank(c[1])))
    products = sorted({product for _, product in columns}, key=product_rank)
    chosen = _composite_bands(bands)
    product = "BGSUB" if "BGSUB" in products else (products[0] if products else None)
    return Gallery(
        columns=[{"key": f"{b}|{p}", "band": b, "product_type": p} for b, p in ordered],
        bands=bands, targets=[targets[n] for n in sorted(targets)],
        composite_bands=chosen, composite_product=product if chosen else None)


def _composite_bands(bands: list[str]) -> list[str]:
    """Red, green, blue: the three bands, or the reddest, middle and bluest of more."""
    if len(bands) < 3:
        return []
    return [bands[-1], bands[len(bands) // 2], bands[0]]


def _result_id(file: str | None) -> str | None:
    """The job result id of a stamp from its path in the bundle (see jobs/batch.py)."""
    return file.replace("/", "_") if file else None


def load_gallery(manifest: Path, band_wavelength: dict[str, float]) -> Gallery:
    """The gallery of a manifest, parsed once per file version (a few kept in memory)."""
    key = (str(manifest), manifest.stat().st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    gallery = build_gallery(manifest_rows(manifest), band_wavelength)
    with _cache_lock:
        _cache[key] = gallery
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return gallery


def stamp_pixels(path: Path) -> np.ndarray:
    """Physical pixel values of a FITS stamp (first HDU with an image; BSCALE applied)."""
    with fits.open(path, memmap=False) as hdus:
        for hdu in hdus:
            if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                data = np.asarray(hdu.data)
                blank = hdu.header.get("BLANK") if data.dtype.kind in "iu" else None
                values = data.astype(np.float64) if data.dtype.kind in "iu" else data
                if blank is not None:
                    values = np.where(data == blank, np.nan, values)
                return values
    raise ValueError(f"{path.name} holds no image")


def render_thumbnail(path: Path, options: PreviewOptions) -> bytes:
    """PNG/JPEG of a FITS stamp with the chosen stretch, limits and inversion."""
    return options.render(stamp_pixels(path))


def render_colour(paths: list[Path], size: int | None) -> bytes:
    """Lupton RGB PNG of three FITS stamps (red, green, blue)."""
    red, green, blue = (stamp_pixels(path) for path in paths)
    return render_composite(red, green, blue, stretch=COMPOSITE_STRETCH, size=size)
