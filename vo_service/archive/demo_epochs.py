"""The time-domain field of the demo archive: when it was seen, what varies and what moves.

- ``EPOCH_COUNT`` visits over ten months at an irregular cadence (:func:`epoch_dates`);
- the variable star (``variable = 1`` in sources.csv) follows a sinusoid in magnitude
  (:func:`variable_mag`), evaluated at each visit's mid-exposure time; ``variable.csv``
  lists the injected magnitude and flux per visit;
- an asteroid crosses the field (:func:`asteroid_position`): slow and distant enough that
  it does not trail within an exposure, it is drawn as a point source at its position at
  mid-exposure; ``asteroid.csv`` is its ephemeris (one row a day, with rates), in the form
  the service reads (time, RA, Dec, RA rate x cos Dec, Dec rate in arcsec/hour).

Everything is a pure function of the seed, so the archive stays byte-for-byte reproducible.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
from astropy.time import Time

from vo_service.archive.demo_sky import AB_ZERO_UJY, BANDS, Catalog, rng_for
from vo_service.engine.writing import atomic_write

EPOCH_COUNT = 20
FIRST_VISIT = "2024-02-01T03:12:40"
SPAN_DAYS = 300.0
VARIABLE_MEAN_MAG = 20.5
VARIABLE_AMPLITUDE_MAG = 0.6
VARIABLE_PERIOD_DAYS = 37.3
ASTEROID_MAG = 19.8
ASTEROID_ID = 299999
EXPOSURE_S = 560.0
DITHERS = 4  # an epoch's exposure runs over four dithers: DATE-END = start + 4 x EXPTIME


def epoch_dates(seed: int) -> list[str]:
    """ISO start times (UTC, whole seconds) of the visits: roughly every 16 days."""
    start = Time(FIRST_VISIT, format="isot", scale="utc").mjd
    steps = np.linspace(0.0, SPAN_DAYS, EPOCH_COUNT)
    jitter = rng_for(seed, "cadence").uniform(-4.0, 4.0, EPOCH_COUNT)
    jitter[0] = 0.0
    return [Time(start + float(day), format="mjd", scale="utc", precision=0).isot
            for day in steps + jitter]


def mid_exposure(date_obs: str) -> float:
    """MJD half way through a visit (start + 2 x EXPTIME)."""
    start = Time(date_obs, format="isot", scale="utc").mjd
    return start + DITHERS * EXPOSURE_S / 2.0 / 86400.0


def variable_mag(mjd: float | np.ndarray) -> float | np.ndarray:
    """The injected VIS magnitude of the variable star at a time."""
    t0 = Time(FIRST_VISIT, format="isot", scale="utc").mjd
    return VARIABLE_MEAN_MAG + VARIABLE_AMPLITUDE_MAG * np.sin(
        2.0 * np.pi * (np.asarray(mjd) - t0) / VARIABLE_PERIOD_DAYS)


def asteroid_position(mjd: float | np.ndarray, centre: tuple[float, float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of the asteroid: it enters the field from the east a few
    visits in, drifts west at about 0.4"/day on a gently curved track, and leaves it."""
    t0 = Time(FIRST_VISIT, format="isot", scale="utc").mjd
    days = np.asarray(mjd, dtype=float) - t0
    east_arcsec = 62.0 - 0.42 * days
    north_arcsec = 9.0 + 6.0 * np.sin(2.0 * np.pi * days / 365.25)
    dec = centre[1] + north_arcsec / 3600.0
    ra = centre[0] + east_arcsec / 3600.0 / np.cos(np.radians(dec))
    return ra, dec


def with_asteroid(catalog: Catalog, ra: float, dec: float) -> Catalog:
    """The catalog plus the asteroid as a point source at (ra, dec)."""
    extra = {"ids": ASTEROID_ID, "ra": ra, "dec": dec, "is_galaxy": False,
             "mags": ASTEROID_MAG, "r_half_arcsec": 0.0, "axis_ratio": 1.0,
             "position_angle_deg": 0.0, "line_um": 0.0}
    columns = {}
    for item in fields(Catalog):
        values = getattr(catalog, item.name)
        row = np.full((1, *values.shape[1:]), extra[item.name], dtype=values.dtype)
        columns[item.name] = np.concatenate([values, row])
    return Catalog(**columns)


def write_variable_csv(path: Path, dates: list[str], variable_id: int) -> None:
    """variable.csv: the injected light curve of the variable star, one row per visit."""
    rows = [["epoch", "date_obs", "mjd_mid", "id", "mag_VIS", "flux_uJy"]]
    for number, date in enumerate(dates, start=1):
        mid = mid_exposure(date)
        mag = float(variable_mag(mid))
        rows.append([str(number), date, f"{mid:.8f}", str(variable_id), f"{mag:.5f}",
                     f"{10 ** ((AB_ZERO_UJY - mag) / 2.5):.6f}"])
    _write_csv(path, rows)


def write_asteroid_csv(path: Path, dates: list[str], centre: tuple[float, float]) -> None:
    """asteroid.csv: the asteroid's ephemeris, daily from a day before the first visit to
    a day after the last, with rates (arcsec/hour) from the exact track."""
    first = math.floor(Time(dates[0], format="isot", scale="utc").mjd) - 1.0
    last = math.ceil(mid_exposure(dates[-1])) + 1.0
    rows = [["mjd", "ra", "dec", "ra_rate", "dec_rate"]]
    step = 1e-3  # days, for the numerical derivative
    for mjd in np.arange(first, last + 0.5, 1.0):
        ra, dec = asteroid_position(mjd, centre)
        ra_a, dec_a = asteroid_position(mjd + step, centre)
        ra_b, dec_b = asteroid_position(mjd - step, centre)
        ra_rate = (ra_a - ra_b) / (2 * step) * math.cos(math.radians(float(dec))) * 3600 / 24
        dec_rate = (dec_a - dec_b) / (2 * step) * 3600 / 24
        rows.append([f"{mjd:.5f}", f"{float(ra):.9f}", f"{float(dec):.9f}",
                     f"{float(ra_rate):.7f}", f"{float(dec_rate):.7f}"])
    _write_csv(path, rows)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    atomic_write(path, [text.getvalue().encode()])


assert BANDS[0].name == "VIS"  # the visits are VIS images; variable_mag is a VIS magnitude
