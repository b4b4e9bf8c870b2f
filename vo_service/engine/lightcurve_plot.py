"""A light curve as a PNG: flux with error bars against time (matplotlib, Agg, no display).

Flagged points are drawn hollow; epochs without a measurement are marked along the bottom
axis so that a gap in the curve is visibly a gap in the data, not a missing epoch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def light_curve_png(times: Sequence[float | None], fluxes: Sequence[float],
                    errors: Sequence[float], flags: Sequence[int], *, title: str = "",
                    unit: str = "", width_px: int = 900, height_px: int = 360) -> bytes:
    """PNG bytes of the light curve (times in MJD)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # the OO API: no pyplot state, thread-safe

    time = np.array([np.nan if t is None else float(t) for t in times])
    flux = np.asarray(fluxes, dtype=float)
    error = np.asarray(errors, dtype=float)
    flag = np.asarray(flags, dtype=int)
    measured = np.isfinite(time) & np.isfinite(flux)
    clean = measured & (flag & ~4 == 0)  # bit 4 (error from background) is no defect
    figure = Figure(figsize=(width_px / 100, height_px / 100), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    axes.errorbar(time[clean], flux[clean], yerr=np.nan_to_num(error[clean]), fmt="o",
                  color="#1f5fa8", ecolor="#7a9cc6", markersize=4, capsize=2, label="measured")
    if (measured & ~clean).any():
        dirty = measured & ~clean
        axes.errorbar(time[dirty], flux[dirty], yerr=np.nan_to_num(error[dirty]), fmt="o",
                      mfc="white", color="#c05a1f", markersize=4, capsize=2, label="flagged")
    missing = np.isfinite(time) & ~np.isfinite(flux)
    if missing.any():
        axes.plot(time[missing], np.zeros(int(missing.sum())), "x", color="#999999",
                  transform=axes.get_xaxis_transform(), label="no measurement")
    axes.set_xlabel("time (MJD, mid-exposure)")
    axes.set_ylabel(f"flux ({unit})" if unit else "flux")
    if title:
        axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if measured.any() or missing.any():
        axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    stream = io.BytesIO()
    figure.savefig(stream, format="png")
    return stream.getvalue()
