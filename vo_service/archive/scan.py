"""Reading one FITS file into index records: one ImageRecord per served image HDU.

Served HDUs are image HDUs (primary, image extension, tile-compressed) that hold data and
carry a celestial WCS. Metadata comes from the archive mapping; footprints from the WCS.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from vo_service.archive import passbands
from vo_service.archive.footprint import celestial_image, image_footprint
from vo_service.archive.mapping import ArchiveMapping, header_lookup
from vo_service.archive.product_scan import (
    ProductScanError,
    product_kind_of,
    read_product_records,
    read_votable_catalog,
)
from vo_service.archive.records import ImageRecord, finite_or_none

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
VOTABLE_SUFFIXES = (".vot", ".votable")  # source catalogs (docs/products.md)
IMAGE_HDU_TYPES = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
STOKES_CODES = {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR",
                -5: "XX", -6: "YY", -7: "XY", -8: "YX"}


class ScanError(Exception):
    """A file that cannot be indexed; the message is the reason reported to the operator."""


@dataclass(frozen=True)
class FileStat:
    """Identity of a file version: unchanged files keep size and modification time."""

    size: int
    mtime: float


def is_fits_name(path: Path) -> bool:
    """Whether a file name has a FITS suffix (``.fits``, ``.fits.gz``, ``.fits.fz``, ...)
    or is a VOTable catalog (``.vot``, ``.votable``)."""
    return path.name.lower().endswith(FITS_SUFFIXES + VOTABLE_SUFFIXES)


def walk_fits(root: Path) -> Iterator[Path]:
    """FITS files under ``root`` in a stable order, skipping hidden files and directories."""
    visited: set[tuple[int, int]] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) in visited:  # a symbolic link loop
            subdirs[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if not name.startswith(".") and is_fits_name(path):
                yield path


def publisher_did(authority: str, collection: str, relative_path: str, hdu: int | None) -> str:
    """``ivo://<authority>/<collection>?<path>`` plus ``[<hdu>]`` for multi-image files."""
    collection_part = quote(collection, safe="-._~")
    did = f"ivo://{authority}/{collection_part}?{quote(relative_path, safe='/-._~+')}"
    return did if hdu is None else f"{did}[{hdu}]"


def read_records(
    path: Path, root: Path, mapping: ArchiveMapping, authority: str, stat: FileStat
) -> tuple[list[ImageRecord], list[str]]:
    """Records of the served HDUs of ``path`` and problems with single HDUs.

    Raises ScanError when the file as a whole cannot be used (not FITS, truncated, nothing
    served).
    """
    relative = path.relative_to(root).as_posix()

    def make_did(collection: str, relative_path: str, hdu: int | None) -> str:
        return publisher_did(authority, collection, relative_path, hdu)

    try:
        if path.name.lower().endswith(VOTABLE_SUFFIXES):
            return read_votable_catalog(path, relative, root, mapping, stat.size, stat.mtime,
                                        make_did), []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
                _check_complete(caught, hdul, path, stat)
                found = product_kind_of(hdul, relative, mapping)  # a PSF or a catalog
                if found is not None:
                    return read_product_records(found, hdul, path, relative, root, stat.size,
                                                stat.mtime, make_did), []
                return _records_of(hdul, path, relative, root, mapping, authority, stat)
    except ScanError:
        raise
    except ProductScanError as exc:
        raise ScanError(str(exc)) from exc
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise ScanError(_reason(exc)) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"not a readable FITS file: {text}"


def _check_complete(caught: list[warnings.WarningMessage], hdul: fits.HDUList, path: Path,
                    stat: FileStat) -> None:
    """Reject truncated or corrupted files (astropy only warns about them)."""
    for warning in caught:
        text = str(warning.message)
        if "truncated" in text or "corrupted" in text or "not multiple of 2880" in text:
            raise ScanError(f"truncated or corrupted FITS file: {text.splitlines()[0]}")
    if len(hdul) == 0:
        raise ScanError("not a FITS file: no header data unit")
    if path.name.lower().endswith(".gz"):
        return
    for index, hdu in enumerate(hdul):
        info = hdu.fileinfo()
        if info and info["datLoc"] + info["datSpan"] > stat.size:
            raise ScanError(
                f"truncated FITS file: HDU {index} needs {info['datLoc'] + info['datSpan']} "
                f"bytes, the file has {stat.size}"
            )


def _records_of(hdul: fits.HDUList, path: Path, relative: str, root: Path,
                mapping: ArchiveMapping, authority: str, stat: FileStat,
                ) -> tuple[list[ImageRecord], list[str]]:
    served = []
    problems = []
    for index, hdu in enumerate(hdul):
        if not isinstance(hdu, IMAGE_HDU_TYPES) or not hdu.shape or 0 in hdu.shape:
            continue
        try:
            image = celestial_image(hdu, hdul)
            if image is not None:
                served.append((index, hdu, image, image_footprint(image)))
        except (ValueError, TypeError, MemoryError, KeyError) as exc:
            problems.append(f"HDU {index}: unusable WCS: {str(exc).splitlines()[0]}")
    if not served:
        detail = "; ".join(problems) if problems else "no image HDU with a celestial WCS"
        raise ScanError(detail)
    primary = hdul[0].header
    records = []
    for index, hdu, image, footprint in served:
        header = hdu.header
        get = header_lookup(header, primary) if index else header_lookup(header)
        assigned = mapping.assign(relative, header_lookup(header),
                                  header_lookup(primary) if index else None)
        collection = assigned.collection or root.name
        multi = len(served) > 1
        stem = re.sub(r"\.(fits|fit|fts)(\.gz|\.fz)?$|\.fz$", "", path.name, flags=re.I)
        extname = _text(header.get("EXTNAME"))
        spectral = _spectral_range(header, hdul, (footprint.centre_ra, footprint.centre_dec))
        em_min, em_max, em_xel = spectral if spectral else (None, None, None)
        em_res_power = None
        if spectral is None:
            # an image: its filter's range (mapping or identified), else a WAVELEN keyword
            passband = assigned.band_range or passbands.header_wavelength(
                [header, primary] if index else [header])
            if passband is not None:
                em_min, em_max = passband.em_min, passband.em_max
                em_res_power = passband.em_res_power
        t_min, t_max, exptime = _time_range(get)
        shape = tuple(int(n) for n in hdu.shape)
        info = hdu.fileinfo() or {}
        size = stat.size
        if multi and info and not path.name.lower().endswith(".gz"):
            size = info["datLoc"] - info["hdrLoc"] + info["datSpan"]
        records.append(ImageRecord(
            obs_publisher_did=publisher_did(authority, collection, relative,
                                            index if multi else None),
            obs_collection=collection,
            obs_id=f"{stem}[{index}]" if multi else stem,
            path=path,
            hdu=index,
            dataproduct_type="cube" if sum(n > 1 for n in shape) >= 3 else "image",
            calib_level=assigned.calib_level,
            instrument_name=assigned.instrument,
            facility_name=assigned.facility,
            target_name=assigned.target,
            s_ra=footprint.centre_ra,
            s_dec=footprint.centre_dec,
            s_fov=min(2.0 * footprint.radius_deg, 360.0),
            s_region=footprint.vertices,
            s_resolution=footprint.pixel_scale_arcsec,
            s_xel1=image.nx,
            s_xel2=image.ny,
            em_min=em_min,
            em_max=em_max,
            em_res_power=em_res_power,
            em_xel=em_xel,
            t_min=t_min,
            t_max=t_max,
            t_exptime=exptime,
            t_xel=1 if t_min is not None else None,
            pol_states=_pol_states(header),
            o_ucd=assigned.o_ucd,
            access_estsize=max(1, math.ceil(size / 1024)),
            band=assigned.band,
            product_type=assigned.product_type,
            tile=assigned.tile,
            extname=extname,
            file_size=stat.size,
            mtime=stat.mtime,
            shape=shape,
            wide=footprint.wide,
        ))
    return records, problems


def _text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _number(value: Any) -> float | None:
    try:
        return finite_or_none(float(value))
    except (TypeError, ValueError):
        return None


TIME_SCALES = {"utc", "tai", "tt", "tdb", "tcg", "tcb", "ut1"}  # astropy.time scales


def _scale(timesys: str) -> str:
    """The astropy.time scale of a TIMESYS value (TDT/ET are TT, GMT/UT are UTC)."""
    scale = {"tdt": "tt", "et": "tt", "gmt": "utc", "ut": "utc", "iat": "tai"}.get(
        timesys.lower(), timesys.lower())
    return scale if scale in TIME_SCALES else "utc"


def _parse_date(value: Any, timesys: str = "utc") -> float | None:
    """UTC MJD of a FITS date: ISO (``2005-07-31[T..]``), ``YYYYMMDD`` or legacy ``dd/mm/yy``,
    read in the TIMESYS scale."""
    text = _text(value)
    if text is None:
        return None
    legacy = re.fullmatch(r"(\d\d)/(\d\d)/(\d\d)", text)
    compact = re.fullmatch(r"(\d{4})(\d\d)(\d\d)", text)
    if legacy:
        day, month, year = legacy.groups()
        text = f"19{year}-{month}-{day}"
    elif compact:
        text = "-".join(compact.groups())
    try:
        return float(Time(text, scale=_scale(timesys)).utc.mjd)
    except ValueError:
        return None


def _mjd(value: Any, timesys: str) -> float | None:
    """UTC MJD of an MJD keyword given in the TIMESYS scale (TT, TAI, TDB, ...)."""
    number = _number(value)
    scale = _scale(timesys)
    if number is None or scale == "utc":
        return number
    try:
        return float(Time(number, format="mjd", scale=scale).utc.mjd)
    except ValueError:
        return number


def _time_range(get: Any) -> tuple[float | None, float | None, float | None]:
    """(t_min, t_max, exposure): UTC MJD from MJD-BEG/MJD-OBS or DATE-BEG/DATE-OBS and
    MJD-END/DATE-END (each read in the TIMESYS scale, with astropy.time), plus EXPTIME
    (else XPOSURE, TELAPSE). Without an end, the start plus the exposure time."""
    timesys = _text(get("TIMESYS")) or "utc"
    exptime = None
    for key in ("EXPTIME", "XPOSURE", "TELAPSE"):
        exptime = _number(get(key))
        if exptime is not None:
            break
    start = _mjd(get("MJD-BEG"), timesys) or _mjd(get("MJD-OBS"), timesys)
    if start is None:
        start = _parse_date(get("DATE-BEG"), timesys) or _parse_date(get("DATE-OBS"), timesys)
    end = _mjd(get("MJD-END"), timesys) or _parse_date(get("DATE-END"), timesys)
    if start is None:
        return None, None, exptime
    if end is None or end < start:
        end = start + (exptime or 0.0) / 86400.0
    return start, end, exptime


def _spectral_range(header: fits.Header, hdul: fits.HDUList, target: tuple[float, float],
                    ) -> tuple[float, float, int] | None:
    """(em_min, em_max, channels): barycentric wavelength (m) of a spectral WCS axis.

    The outer channel edges are converted to wavelength; a cube in another rest frame
    (SPECSYS LSRK, LSRD, ...) is shifted to barycentric by the engine's own conversion, so
    that SIA BAND searches and SODA BAND cutouts agree (an LSRK shift can exceed a whole
    narrow cube).
    """
    axes = max(int(header.get("NAXIS", 0) or 0), int(header.get("WCSAXES", 0) or 0))
    if axes < 3 and not any(f"CTYPE{n}" in header for n in range(3, 10)):
        return None  # no third axis, so no spectral one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            full = WCS(header, hdul, relax=True)
        except (ValueError, MemoryError, KeyError):
            return None
        if not full.has_spectral:
            return None
        full.pixel_shape = None  # degenerate axes beyond NAXIS break sub()
        channels = int(header.get(f"NAXIS{full.wcs.spec + 1}", 1) or 1)
        try:
            spectral = full.spectral
            edges = spectral.pixel_to_world([-0.5, channels - 0.5])
            metres = edges.to(u.m, equivalencies=u.spectral()).value
            metres = metres * _barycentric_factor(full, header, spectral, target)
        except Exception:  # velocity without rest frequency, unknown units, ...
            return None
    if not np.all(np.isfinite(metres)) or np.any(metres <= 0):
        return None
    return float(np.min(metres)), float(np.max(metres)), channels


def _barycentric_factor(full: WCS, header: fits.Header, spectral: WCS,
                        target: tuple[float, float]) -> float:
    """Doppler factor from the cube's SPECSYS to barycentric wavelength (1 when already so)."""
    specsys = str(header.get("SPECSYS", full.wcs.specsys or "BARYCENT")).strip().upper()
    if specsys in ("BARYCENT", "HELIOCEN", "ICRS", ""):
        return 1.0
    from vo_service.engine.spectral import barycentric_wavelengths

    native = spectral.pixel_to_world([0.0]).to(u.m, equivalencies=u.spectral()).value
    moved = barycentric_wavelengths(full, header, full.wcs.spec, 1, target)
    return float(moved[0] / native[0])


def _pol_states(header: fits.Header) -> str | None:
    """ObsCore pol_states (``/I/Q/U/``) of a STOKES axis with more than one state, else None."""
    for axis in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{axis}", "")).strip().upper() != "STOKES":
            continue
        count = int(header.get(f"NAXIS{axis}", 1))
        if count < 2:
            return None
        crval = float(header.get(f"CRVAL{axis}", 1.0))
        cdelt = float(header.get(f"CDELT{axis}", 1.0))
        crpix = float(header.get(f"CRPIX{axis}", 1.0))
        codes = [round(crval + (i + 1 - crpix) * cdelt) for i in range(count)]
        names = [STOKES_CODES.get(code) for code in codes]
        return "/" + "/".join(n for n in names if n) + "/" if all(names) else None
    return None
