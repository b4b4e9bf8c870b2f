"""Raw FITS pixels -> physical values: the one conversion every preview, statistic and
photometry uses (FITS 4.0 §4.4.2.5 and §5.2).

physical = BZERO + BSCALE * raw, for integer and floating-point data alike; BLANK marks
undefined pixels of integer data only (floating-point data mark them as NaN themselves).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def physical_values(raw: np.ndarray, *, bscale: float = 1.0, bzero: float = 0.0,
                    blank: int | None = None, dtype: np.dtype | type | None = None
                    ) -> np.ndarray:
    """Physical values of raw FITS pixels.

    Integers become floats (``dtype``, by default float32 up to 16-bit integers and
    float64 beyond, as astropy does), BLANK pixels NaN, then BSCALE/BZERO are applied.
    Floating-point data are scaled too; without scaling (and without another ``dtype``)
    they are returned as they are: the same array, no copy.
    """
    scaled = bscale != 1.0 or bzero != 0.0
    if raw.dtype.kind not in "iu":
        values = raw if dtype is None else raw.astype(dtype)
        return values * values.dtype.type(bscale) + values.dtype.type(bzero) if scaled \
            else values
    if dtype is None:
        dtype = np.float32 if raw.dtype.itemsize <= 2 else np.float64
    values = raw.astype(dtype)
    if blank is not None:
        values[raw == blank] = np.nan
    if scaled:
        values *= values.dtype.type(bscale)
        values += values.dtype.type(bzero)
    return values


def header_scaling(header: Mapping) -> dict[str, float | int | None]:
    """The keyword arguments of `physical_values` for pixels described by ``header``
    (BSCALE, BZERO and, for integer BITPIX, BLANK)."""
    blank = header.get("BLANK") if int(header.get("BITPIX", -32)) > 0 else None
    return {"bscale": float(header.get("BSCALE", 1.0)), "bzero": float(header.get("BZERO", 0.0)),
            "blank": None if blank is None else int(blank)}
