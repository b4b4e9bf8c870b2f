"""Ephemerides of moving targets: a table of times and positions, and where the target is
at any time between its rows.

Read from a VOTable, FITS table or CSV/TSV (the same safety checks as catalogs). Columns:

- time: named by the caller, else the column with UCD ``time.epoch`` or named ``mjd``,
  ``time``, ``epoch``, ``jd``, ``date``, ``datetime``, ``date_obs``; numbers are MJD, or
  JD when above 2,400,000; text is an ISO date (UTC);
- RA and Dec: found as in catalogs (UCD, then ``ra``/``dec``, ``RAJ2000``, ...), degrees or
  sexagesimal;
- optional rates, ``ra_rate`` (dRA cos Dec / dt) and ``dec_rate`` (or JPL Horizons'
  ``dRA*cosD``/``d(DEC)/dt``): arcsec per hour unless the column's unit says otherwise.

Interpolation (:meth:`Ephemeris.position_at`), never extrapolation (outside the table the
position is NaN): without rates, along the great circle between the two rows around the
time at a constant angular rate (spherical linear interpolation of unit vectors); with
rates, a cubic Hermite curve in RA and Dec through both rows with the rates as derivatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy.time import Time

from vo_service.catalogs import read_table
from vo_service.catalogs.columns import CatalogError, check_positions, choose_columns, read_angles

TIME_NAMES = ("mjd", "mjd_utc", "time", "t", "epoch", "jd", "date", "datetime", "date_obs",
              "date-obs", "obs_time", "utc")
RA_RATE_NAMES = ("ra_rate", "dra", "dra*cosd", "dra_cosd", "ra_rate_arcsec_h", "pmra_rate")
DEC_RATE_NAMES = ("dec_rate", "ddec", "d(dec)/dt", "ddec/dt", "dec_rate_arcsec_h")
MAX_EPHEMERIS_ROWS = 100_000


class EphemerisError(ValueError):
    """An ephemeris that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Ephemeris:
    """Positions (ICRS degrees) of a moving target at increasing times (MJD, UTC); rates in
    degrees per day (RA rate times cos Dec) or None."""

    mjd: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    ra_rate: np.ndarray | None = None
    dec_rate: np.ndarray | None = None

    @property
    def span(self) -> tuple[float, float]:
        """First and last time of the table (MJD)."""
        return float(self.mjd[0]), float(self.mjd[-1])

    def position_at(self, mjd: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) ICRS degrees at each time; NaN outside the table's span."""
        times = np.atleast_1d(np.asarray(mjd, dtype=float))
        ra = np.full(times.shape, np.nan)
        dec = np.full(times.shape, np.nan)
        inside = (times >= self.mjd[0]) & (times <= self.mjd[-1])
        if len(self.mjd) == 1:
            ra[inside], dec[inside] = self.ra[0], self.dec[0]
            return ra, dec
        after = np.clip(np.searchsorted(self.mjd, times[inside], side="right"), 1,
                        len(self.mjd) - 1)
        before = after - 1
        t0, t1 = self.mjd[before], self.mjd[after]
        fraction = (times[inside] - t0) / (t1 - t0)
        if self.ra_rate is not None and self.dec_rate is not None:
            ra[inside], dec[inside] = self._hermite(before, after, fraction, t1 - t0)
        else:
            ra[inside], dec[inside] = _slerp(self.ra[before], self.dec[before],
                                             self.ra[after], self.dec[after], fraction)
        return ra, dec

    def _hermite(self, i: np.ndarray, j: np.ndarray, s: np.ndarray, step: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        assert self.ra_rate is not None and self.dec_rate is not None
        ra0 = self.ra[i]
        ra1 = ra0 + ((self.ra[j] - ra0 + 180.0) % 360.0 - 180.0)  # the short way round
        cos0 = np.cos(np.radians(self.dec[i]))
        cos1 = np.cos(np.radians(self.dec[j]))
        h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
        h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
        ra = (h00 * ra0 + h10 * step * self.ra_rate[i] / cos0 + h01 * ra1
              + h11 * step * self.ra_rate[j] / cos1)
        dec = (h00 * self.dec[i] + h10 * step * self.dec_rate[i] + h01 * self.dec[j]
               + h11 * step * self.dec_rate[j])
        return ra % 360.0, dec


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def _slerp(ra0: np.ndarray, dec0: np.ndarray, ra1: np.ndarray, dec1: np.ndarray,
           s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points at fraction ``s`` along the great circle from 0 to 1 (constant rate)."""
    a, b = _unit(ra0, dec0), _unit(ra1, dec1)
    omega = np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0))
    small = omega < 1e-12
    sin_omega = np.where(small, 1.0, np.sin(omega))
    wa = np.where(small, 1.0 - s, np.sin((1.0 - s) * omega) / sin_omega)
    wb = np.where(small, s, np.sin(s * omega) / sin_omega)
    v = wa[..., None] * a + wb[..., None] * b
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return (np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0,
            np.degrees(np.arcsin(np.clip(v[..., 2], -1.0, 1.0))))


def _find(table: Table, requested: str | None, names: tuple[str, ...], ucd: str | None,
          role: str) -> str | None:
    by_lower = {name.lower(): name for name in table.colnames}
    if requested:
        if requested.lower() not in by_lower:
            raise EphemerisError(f"the ephemeris has no column {requested!r} for {role}; "
                                 f"its columns: {', '.join(table.colnames)}")
        return by_lower[requested.lower()]
    if ucd:
        for name in table.colnames:
            meta = getattr(table[name], "meta", {}) or {}
            if str(meta.get("ucd", "")).lower().startswith(ucd):
                return name
    return next((by_lower[n] for n in names if n in by_lower), None)


def _times(column) -> np.ndarray:  # noqa: ANN001 - an astropy Column
    if column.dtype.kind in "iuf":
        values = np.asarray(column, dtype=float)
        unit = column.unit
        if unit is not None and str(unit) not in ("d", "day", ""):
            values = (values * unit).to_value(u.day)
        return np.where(values > 2_400_000.0, values - 2_400_000.5, values)
    texts = [str(v).strip() for v in column]
    numbers = []
    for text in texts:
        try:
            numbers.append(float(text))
            continue
        except ValueError:
            pass
        try:
            numbers.append(float(Time(text.replace(" ", "T", 1) if "T" not in text
                                      and text.count(":") else text, scale="utc").mjd))
        except ValueError as exc:
            raise EphemerisError(f"ephemeris time {text!r} is neither MJD, JD nor an ISO "
                                 "date") from exc
    values = np.array(numbers)
    return np.where(values > 2_400_000.0, values - 2_400_000.5, values)


def _rates(column) -> np.ndarray:  # noqa: ANN001 - an astropy Column
    values = np.asarray(column, dtype=float)
    unit = column.unit if column.unit is not None else u.arcsec / u.hour
    try:
        return (values * unit).to_value(u.deg / u.day)
    except u.UnitConversionError as exc:
        raise EphemerisError(f"rate column {column.name!r} has unit {unit}, not an angle "
                             "per time") from exc


def read_ephemeris(source: bytes | Path, *, filename: str | None = None,
                   time_column: str | None = None, ra_column: str | None = None,
                   dec_column: str | None = None, max_rows: int = MAX_EPHEMERIS_ROWS
                   ) -> Ephemeris:
    """An ephemeris from a VOTable, FITS table or CSV/TSV file; EphemerisError if unusable."""
    name = filename or (Path(source).name if isinstance(source, str | Path) else "ephemeris")
    try:
        table = read_table(source, filename=filename, max_rows=max_rows)
        ra_name, dec_name, _, _ = choose_columns(table, ra_column, dec_column, None, None)
    except CatalogError as exc:
        raise EphemerisError(str(exc)) from exc
    time_name = _find(table, time_column, TIME_NAMES, "time.epoch", "time")
    if time_name is None or ra_name is None or dec_name is None:
        raise EphemerisError(f"{name}: an ephemeris needs a time column (MJD, JD or ISO; "
                             "named mjd, time, epoch, ...), RA and Dec; its columns: "
                             f"{', '.join(table.colnames)}")
    problems: dict[int, str] = {}
    ra = read_angles(table[ra_name], is_ra=True, problems=problems)
    dec = read_angles(table[dec_name], is_ra=False, problems=problems)
    check_positions(ra, dec, problems)
    if problems:
        row, text = next(iter(sorted(problems.items())))
        raise EphemerisError(f"{name}: row {row + 1}: {text}")
    mjd = _times(table[time_name])
    if not np.all(np.isfinite(mjd)):
        raise EphemerisError(f"{name}: the time column {time_name!r} has empty or bad values")
    order = np.argsort(mjd, kind="stable")
    if np.any(np.diff(mjd[order]) <= 0):
        raise EphemerisError(f"{name}: two rows have the same time; give one position per time")
    ra_rate_name = _find(table, None, RA_RATE_NAMES, None, "RA rate")
    dec_rate_name = _find(table, None, DEC_RATE_NAMES, None, "Dec rate")
    ra_rate = dec_rate = None
    if ra_rate_name and dec_rate_name:
        ra_rate, dec_rate = _rates(table[ra_rate_name])[order], _rates(table[dec_rate_name])[order]
        if not (np.all(np.isfinite(ra_rate)) and np.all(np.isfinite(dec_rate))):
            ra_rate = dec_rate = None
    return Ephemeris(mjd[order], ra[order], dec[order], ra_rate, dec_rate)


def path_extent(ephemeris: Ephemeris) -> tuple[float, float, float]:
    """(ra, dec, radius) in degrees of a cone holding every row of the path."""
    vectors = _unit(ephemeris.ra, ephemeris.dec)
    centre = vectors.mean(axis=0)
    norm = float(np.linalg.norm(centre))
    centre = centre / norm if norm > 1e-12 else np.array([1.0, 0.0, 0.0])
    radius = float(np.degrees(np.arccos(np.clip(vectors @ centre, -1, 1))).max())
    ra = math.degrees(math.atan2(centre[1], centre[0])) % 360.0
    dec = math.degrees(math.asin(max(-1.0, min(1.0, float(centre[2])))))
    return ra, dec, radius
