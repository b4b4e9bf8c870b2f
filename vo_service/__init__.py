"""vo-service: a Virtual Observatory image cutout service and cutout library."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["catalog_rows", "combine", "cutout", "fits_cut", "light_curve", "psf",
           "time_series"]


def __getattr__(name: str) -> Any:
    """Lazy exports: `vo_service.cutout` / `fits_cut` / `combine` / `time_series` /
    `light_curve` / `psf` / `catalog_rows` import the engine on first use."""
    if name in ("cutout", "fits_cut"):
        from vo_service.engine import api

        return getattr(api, name)
    if name in ("psf", "catalog_rows"):
        from vo_service.products import api as products_api

        return getattr(products_api, name)
    if name == "combine":
        from vo_service.engine.combine import combine_files

        return combine_files
    if name in ("time_series", "light_curve"):
        from vo_service import timeseries_api

        return getattr(timeseries_api, name)
    raise AttributeError(f"module 'vo_service' has no attribute {name!r}")
