"""One served image HDU as the archive index knows it: ObsCore metadata plus file location."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

Vertices = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ImageRecord:
    """One served image HDU: ObsCore 1.1 fields, survey grouping and where its pixels live.

    ``s_region`` holds the footprint vertices (ICRS degrees, counter-clockwise, great-circle
    edges). ``wide`` marks images the polygon cannot describe (whole sky, more than a
    hemisphere, or edges outside the projection): their containment is decided with the
    WCS itself and ``s_region`` is None.
    """

    obs_publisher_did: str
    obs_collection: str
    obs_id: str
    path: Path
    hdu: int
    dataproduct_type: str = "image"
    calib_level: int = 2
    instrument_name: str | None = None
    facility_name: str | None = None
    target_name: str | None = None
    s_ra: float | None = None
    s_dec: float | None = None
    s_fov: float | None = None
    s_region: Vertices | None = None
    s_resolution: float | None = None
    s_xel1: int | None = None
    s_xel2: int | None = None
    em_min: float | None = None
    em_max: float | None = None
    em_res_power: float | None = None
    em_xel: int | None = None
    t_min: float | None = None
    t_max: float | None = None
    t_exptime: float | None = None
    t_resolution: float | None = None
    t_xel: int | None = None
    pol_states: str | None = None
    pol_xel: int | None = None
    o_ucd: str | None = None
    access_format: str = "application/fits"
    access_estsize: int | None = None
    band: str | None = None
    product_type: str | None = None
    tile: str | None = None
    extname: str | None = None
    file_size: int = 0
    mtime: float = 0.0
    shape: tuple[int, ...] = ()
    wide: bool = False
    # None for images; "psf" (a PSF model) or "catalog" (a source table): products answered
    # per target by vo_service/products/ rather than cut (docs/products.md)
    product_kind: str | None = None

    def to_row(self) -> dict[str, Any]:
        """The SQLite row: tuples as JSON text, the path as a string, booleans as ints."""
        row = asdict(self)
        row["path"] = str(self.path)
        row["s_region"] = None if self.s_region is None else json.dumps(self.s_region)
        row["shape"] = json.dumps(list(self.shape))
        row["wide"] = int(self.wide)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ImageRecord:
        """Inverse of :meth:`to_row`; ignores columns that are not fields."""
        values = {name: row[name] for name in _FIELD_NAMES if name in row}
        values["path"] = Path(row["path"])
        region = row.get("s_region")
        values["s_region"] = (
            None if region is None else tuple((float(a), float(b)) for a, b in json.loads(region))
        )
        values["shape"] = tuple(json.loads(row.get("shape") or "[]"))
        values["wide"] = bool(row.get("wide"))
        return cls(**values)

    @property
    def stc_s(self) -> str | None:
        """s_region as an STC-S ``Polygon ICRS ...`` string (ObsTAP style), or None."""
        if self.s_region is None:
            return None
        coords = " ".join(f"{ra:.8f} {dec:.8f}" for ra, dec in self.s_region)
        return f"Polygon ICRS {coords}"

    @property
    def dali_polygon(self) -> list[float] | None:
        """s_region as a flat DALI ``double[*]`` polygon (ra1, dec1, ra2, dec2, ...)."""
        if self.s_region is None:
            return None
        return [c for vertex in self.s_region for c in vertex]


_FIELD_NAMES = tuple(f.name for f in fields(ImageRecord))


def column_types() -> dict[str, type]:
    """SQLite column types for the ``images`` table, derived from the dataclass."""
    types: dict[str, type] = {}
    for f in fields(ImageRecord):
        hint = str(f.type)
        if f.name in {"path", "s_region", "shape"} or "str" in hint:
            types[f.name] = str
        elif "float" in hint:
            types[f.name] = float
        elif "int" in hint or "bool" in hint:
            types[f.name] = int
        else:
            types[f.name] = str
    return types


def finite_or_none(value: float | None) -> float | None:
    """NaN and infinities become None (null metadata)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Combination:
    """One (collection, instrument, band, product type) present in the archive."""

    collection: str
    instrument: str
    band: str
    product_type: str
    images: int
    wavelength: float | None  # shortest em_min of the band's images, metres
