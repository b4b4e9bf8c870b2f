"""The cutout engine: sky regions -> exact FITS stamps (no HTTP, no jobs).

Main entry points (imported lazily): `cut`, `cut_many`, `iter_cutouts`, `CutoutResult`,
`StampStatus`, `OpenImage`, `OpenImagePool`, `PixelBox`, `CutoutError`, `BundleWriter`,
`write_multi_extension`, `plan_units`, `ImageTask`, `cut_unit`, `run_tasks`, `cutout`,
`LocalExecutor`, `ProcessExecutor`, `DaskExecutor`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "cut": "api", "CutoutResult": "cutout", "describe_region": "cutout",
    "StampStatus": "cutout",
    "cut_many": "batch", "iter_cutouts": "batch", "BundleWriter": "bundle", "ZipStream": "bundle",
    "ZipAppender": "bundle",
    "write_multi_extension": "batch", "multi_extension_chunks": "batch",
    "ImageTask": "batch", "StampRecord": "batch", "plan_units": "batch", "cut_unit": "batch",
    "run_tasks": "batch", "cut_task": "batch", "write_task_files": "batch",
    "append_task_zip": "batch", "bundle_tasks": "batch",
    "OpenImage": "reading", "OpenImagePool": "reading", "PixelBox": "geometry",
    "SkyToPixel": "geometry",
    "CutoutError": "spectral", "atomic_write": "writing", "cutout": "api",
    "fits_cut": "api", "Executor": "executors", "LocalExecutor": "executors",
    "ProcessExecutor": "executors", "DaskExecutor": "executors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"vo_service.engine.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vo_service.engine' has no attribute {name!r}")
