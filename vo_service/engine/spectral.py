"""BAND, TIME and POL filters -> channel ranges on the non-celestial axes of a cube.

BAND is barycentric wavelength in metres (SODA); each channel of the cube is converted
from the cube's own spectral type, unit and frame (SPECSYS) into barycentric wavelength
with astropy (SpectralCoord) before selecting channels, so an LSRK velocity cube answers
in the right channels. A filter that selects nothing is a no-overlap, never a slab.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

STOKES_LABELS = {
    1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR",
    -5: "XX", -6: "YY", -7: "XY", -8: "YX",
}  # FITS WCS Paper I, Table 7
TIME_CTYPES = ("TIME", "MJD", "UTC", "TAI", "TT", "TDB", "TCB", "TCG", "GPS", "UT1", "TDT")
SPECSYS_FRAMES = {"LSRK": "lsrk", "LSRD": "lsrd", "GALACTOC": "galactocentric"}


class CutoutError(ValueError):
    """A request the image cannot answer (not a no-overlap); the message says why."""


@dataclass(frozen=True)
class AxisSelection:
    """Ranges (0-based, half-open) for FITS axes 3.. and, if empty, why: `no_overlap`
    (a message) and `missed`, the filter that selected nothing ('band', 'time', 'pol')."""

    ranges: tuple[tuple[int, int], ...]
    no_overlap: str | None = None
    missed: str | None = None


def _channel_edges(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper world limits of each channel from the channel centres."""
    if centres.size == 1:
        return centres.copy(), centres.copy()
    mids = (centres[1:] + centres[:-1]) / 2
    first = centres[0] - (mids[0] - centres[0])
    last = centres[-1] + (centres[-1] - mids[-1])
    edges = np.concatenate([[first], mids, [last]])
    return np.minimum(edges[:-1], edges[1:]), np.maximum(edges[:-1], edges[1:])


def _overlapping(lows: np.ndarray, highs: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    hit = np.flatnonzero((highs >= lo) & (lows <= hi))
    if hit.size == 0:
        return 0, 0
    return int(hit.min()), int(hit.max()) + 1


def barycentric_wavelengths(
    wcs: WCS, header: fits.Header, axis: int, length: int, target: tuple[float, float]
) -> np.ndarray:
    """Barycentric wavelength (m) of each channel of spectral FITS axis `axis` (0-based)."""
    from astropy.coordinates import SkyCoord, SpectralCoord, frame_transform_graph

    spectral = wcs.sub([axis + 1])
    values = spectral.pixel_to_world(np.arange(length))
    try:
        wavelengths = u.Quantity(values.to(u.m))
    except (ValueError, u.UnitsError) as exc:
        raise CutoutError(
            f"BAND cannot be applied: the spectral axis {wcs.wcs.ctype[axis]!r} cannot be "
            f"converted to wavelength ({exc}); the cube needs a rest frequency "
            "(RESTFRQ) or rest wavelength (RESTWAV)"
        ) from exc
    specsys = str(header.get("SPECSYS", wcs.wcs.specsys or "BARYCENT")).strip().upper()
    if specsys in ("BARYCENT", "HELIOCEN", "ICRS", ""):
        return np.atleast_1d(wavelengths.to_value(u.m))
    if specsys not in SPECSYS_FRAMES:
        raise CutoutError(
            f"BAND cannot be applied: spectral frame SPECSYS={specsys} is not supported "
            "(supported: BARYCENT, HELIOCEN, LSRK, LSRD, GALACTOC)"
        )
    frame_cls = frame_transform_graph.lookup_name(SPECSYS_FRAMES[specsys])
    zero = 0 * u.m
    still = 0 * u.km / u.s
    observer = frame_cls(
        x=zero, y=zero, z=zero, v_x=still, v_y=still, v_z=still,
        representation_type="cartesian", differential_type="cartesian",
    )
    direction = SkyCoord(
        target[0] * u.deg, target[1] * u.deg, distance=1 * u.Mpc, radial_velocity=still,
        pm_ra_cosdec=0 * u.mas / u.yr, pm_dec=0 * u.mas / u.yr, frame="icrs",
    )
    seen = SpectralCoord(wavelengths, observer=observer, target=direction)
    barycentric = seen.with_observer_stationary_relative_to("icrs")
    return np.atleast_1d(u.Quantity(barycentric).to_value(u.m))


def _degenerate_passband(wcs: WCS, header: fits.Header, axis: int,
                         target: tuple[float, float]) -> tuple[float, float] | None:
    """Wavelength interval (m) of a degenerate spectral axis (pixels -0.5..0.5), if known."""
    pixels = np.zeros((2, wcs.naxis))
    pixels[:, axis] = (-0.5, 0.5)
    try:
        values = wcs.wcs_pix2world(pixels, 0)[:, axis]
        unit = u.Unit(wcs.wcs.cunit[axis] or "")
        edges = (values * unit).to_value(u.m, equivalencies=u.spectral())
    except (ValueError, u.UnitsError, TypeError):
        return None
    return float(np.min(edges)), float(np.max(edges))


def _time_axis_mjd(wcs: WCS, header: fits.Header, axis: int, length: int) -> np.ndarray:
    """MJD of each plane of a time axis: MJDREF + value in CUNIT (FITS WCS Paper VII).

    Done by hand: astropy's high-level time axis ignores CUNIT (e.g. 'd') here.
    """
    values = wcs.sub([axis + 1]).wcs_pix2world(np.arange(length), 0)[0]
    if wcs.wcs.ctype[axis].upper().startswith("MJD"):
        return np.asarray(values, dtype=float)
    unit = u.Unit(wcs.wcs.cunit[axis] or "s")
    if "MJDREF" in header:
        reference = float(header["MJDREF"])
    else:
        reference = float(header.get("MJDREFI", 0.0)) + float(header.get("MJDREFF", 0.0))
    if not reference and header.get("DATEREF"):
        reference = Time(str(header["DATEREF"])).mjd
    return reference + (np.asarray(values, dtype=float) * unit).to_value(u.day)


def observation_interval(header: fits.Header) -> tuple[float, float] | None:
    """(start, end) MJD of an image from MJD-OBS/DATE-OBS and MJD-END/exposure time."""
    start = header.get("MJD-OBS", header.get("MJD-BEG"))
    if start is None and header.get("DATE-OBS"):
        try:
            start = Time(str(header["DATE-OBS"]).strip(), scale="utc").mjd
        except ValueError:
            start = None
    if start is None:
        return None
    end = header.get("MJD-END")
    if end is None:
        exposure = header.get("XPOSURE", header.get("EXPTIME", header.get("TELAPSE", 0.0)))
        end = float(start) + float(exposure or 0.0) / 86400.0
    return float(start), float(end)


def _stokes_labels(wcs: WCS, axis: int, length: int) -> list[str]:
    codes = wcs.sub([axis + 1]).wcs_pix2world(np.arange(length), 0)[0]
    return [STOKES_LABELS.get(round(code), f"?{code}") for code in codes]


def select_axes(
    wcs: WCS,
    header: fits.Header,
    fits_shape: Sequence[int],
    target: tuple[float, float],
    *,
    band: tuple[float, float] | None = None,
    time: tuple[float, float] | None = None,
    pol: Sequence[str] | None = None,
) -> AxisSelection:
    """Channel ranges for FITS axes 3..n of the data under the BAND/TIME/POL filters.

    Raises CutoutError when a filter cannot be evaluated on this image (e.g. a velocity
    cube without rest frequency asked for a BAND).
    """
    ranges = [(0, int(n)) for n in fits_shape[2:]]
    spectral_axis = wcs.wcs.spec if wcs.wcs.spec >= 2 else None
    time_axis = stokes_axis = None
    for axis in range(2, min(len(fits_shape), wcs.naxis)):
        ctype = wcs.wcs.ctype[axis].upper()
        if ctype == "STOKES":
            stokes_axis = axis
        elif ctype.split("-")[0] in TIME_CTYPES:
            time_axis = axis
    if spectral_axis is not None and spectral_axis >= len(fits_shape):
        if band is not None:  # a degenerate WCS axis without pixels: the image's passband
            passband = _degenerate_passband(wcs, header, spectral_axis, target)
            if passband is not None and (passband[1] < min(band) or passband[0] > max(band)):
                return AxisSelection(tuple(ranges), missed="band", no_overlap=(
                    f"BAND {min(band):.6g}..{max(band):.6g} m is outside the image's "
                    f"passband {passband[0]:.6g}..{passband[1]:.6g} m"))
        spectral_axis = None

    if band is not None and spectral_axis is not None:
        lo, hi = sorted(band)
        length = int(fits_shape[spectral_axis])
        waves = barycentric_wavelengths(wcs, header, spectral_axis, length, target)
        start, stop = _overlapping(*_channel_edges(waves), lo, hi)
        if start == stop:
            return AxisSelection(tuple(ranges), missed="band", no_overlap=(
                f"BAND {lo:.6g}..{hi:.6g} m is outside the cube's range "
                f"{waves.min():.6g}..{waves.max():.6g} m (barycentric)"))
        ranges[spectral_axis - 2] = (start, stop)

    if time is not None:
        lo, hi = sorted(time)
        if time_axis is not None:
            length = int(fits_shape[time_axis])
            mjds = _time_axis_mjd(wcs, header, time_axis, length)
            start, stop = _overlapping(*_channel_edges(mjds), lo, hi)
            if start == stop:
                return AxisSelection(tuple(ranges), f"TIME {lo}..{hi} MJD is outside the cube",
                                     missed="time")
            ranges[time_axis - 2] = (start, stop)
        else:
            interval = observation_interval(header)
            if interval is None:
                return AxisSelection(tuple(ranges), "the image records no observation time",
                                     missed="time")
            if interval[1] < lo or interval[0] > hi:
                return AxisSelection(tuple(ranges), missed="time", no_overlap=(
                    f"TIME {lo}..{hi} MJD does not overlap the observation "
                    f"{interval[0]:.6f}..{interval[1]:.6f} MJD"))

    if pol:
        wanted = {label.strip().upper() for label in pol}
        if stokes_axis is not None:
            length = int(fits_shape[stokes_axis])
            hits = [i for i, label in enumerate(_stokes_labels(wcs, stokes_axis, length))
                    if label in wanted]
            if not hits:
                return AxisSelection(tuple(ranges), f"POL {sorted(wanted)} not in the image",
                                     missed="pol")
            ranges[stokes_axis - 2] = (min(hits), max(hits) + 1)
        elif "I" not in wanted:
            return AxisSelection(
                tuple(ranges), f"POL {sorted(wanted)}: the image has no polarization axis",
                missed="pol")
    return AxisSelection(tuple(ranges))
