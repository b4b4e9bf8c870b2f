"""SIA 2 query constraints as SQL over the ``images`` table (spatial part: see regions.py).

Rules (SIA 2.0 §2): every parameter may repeat; values of one parameter are OR'ed, different
parameters AND'ed; numeric intervals are inclusive; null metadata never matches; strings are
exact, case-insensitively for ID (an IVOID) and for the names a user types (COLLECTION,
FACILITY, INSTRUMENT, TARGET: "vis" finds VIS), case-sensitively for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

Interval = tuple[float, float]

# SIA parameter -> (column for "value within interval") or (low, high columns: "intersects").
OVERLAP_COLUMNS = {"band": ("em_min", "em_max"), "time": ("t_min", "t_max")}
WITHIN_COLUMNS = {"fov": "s_fov", "spatres": "s_resolution", "exptime": "t_exptime",
                  "specrp": "em_res_power", "timeres": "t_resolution"}
STRING_COLUMNS = {"collection": "obs_collection", "facility": "facility_name",
                  "instrument": "instrument_name", "dptype": "dataproduct_type",
                  "target": "target_name", "format": "access_format",
                  "product_type": "product_type", "band_name": "band"}
# Matched ignoring ASCII case (SQLite NOCASE: other letters must match exactly).
NOCASE_CONSTRAINTS = {"collection", "facility", "instrument", "target"}


def _intervals(values: Iterable[float | Sequence[float]]) -> list[Interval]:
    """Normalise values to (low, high); a single number is a point interval."""
    out = []
    for value in values:
        if isinstance(value, int | float):
            lo = hi = float(value)
        else:
            lo, hi = (float(v) for v in value)
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError("interval bounds must be numbers (use -Inf/+Inf for open ends)")
        out.append((lo, hi))
    return out


def _bounded(column_lo: str, column_hi: str, lo: float, hi: float,
             params: list[object]) -> str:
    """SQL for [column_lo, column_hi] meeting [lo, hi]; nulls never match."""
    parts = [f"{column_lo} IS NOT NULL", f"{column_hi} IS NOT NULL"]
    if math.isfinite(hi) or hi < 0:
        parts.append(f"{column_lo} <= ?")
        params.append(hi)
    if math.isfinite(lo) or lo > 0:
        parts.append(f"{column_hi} >= ?")
        params.append(lo)
    return "(" + " AND ".join(parts) + ")"


def where_clause(constraints: dict[str, Sequence[object]]) -> tuple[str, list[object]]:
    """WHERE text (without the keyword, '1' when empty) and its parameters.

    Keys: band, time (overlap); fov, spatres, exptime, specrp, timeres (within); pol
    (states); id (case-insensitive); calib (ints); collection, facility, instrument, target
    (strings, any ASCII case); dptype, format, product_type, band_name (exact strings).
    Empty lists are ignored.
    """
    clauses: list[str] = []
    params: list[object] = []
    for name, values in constraints.items():
        values = list(values)
        if not values:
            continue
        if name in OVERLAP_COLUMNS:
            lo_col, hi_col = OVERLAP_COLUMNS[name]
            alternatives = [_bounded(lo_col, hi_col, lo, hi, params)
                            for lo, hi in _intervals(values)]
        elif name in WITHIN_COLUMNS:
            column = WITHIN_COLUMNS[name]
            alternatives = [_bounded(column, column, lo, hi, params)
                            for lo, hi in _intervals(values)]
        elif name == "pol":
            alternatives = ["instr(pol_states, ?) > 0" for _ in values]
            params.extend(f"/{str(v).strip()}/" for v in values)
        elif name == "id":
            alternatives = [f"lower(obs_publisher_did) IN ({', '.join('?' * len(values))})"]
            params.extend(str(v).lower() for v in values)
        elif name == "calib":
            alternatives = [f"calib_level IN ({', '.join('?' * len(values))})"]
            params.extend(int(v) for v in values)
        elif name in STRING_COLUMNS:
            column = STRING_COLUMNS[name]
            collate = " COLLATE NOCASE" if name in NOCASE_CONSTRAINTS else ""
            alternatives = [f"{column}{collate} IN ({', '.join('?' * len(values))})"]
            params.extend(str(v) for v in values)
        else:
            raise ValueError(f"unknown search constraint {name!r}")
        clauses.append("(" + " OR ".join(alternatives) + ")")
    return (" AND ".join(clauses) or "1"), params
