"""Python API in the spirit of astrocut's `fits_cut`: many targets x many files, to files
or in memory.

>>> import vo_service
>>> stamps = vo_service.cutout(["a.fits", "b.fits"], [(150.1, 2.2), (150.2, 2.3)], 64)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from vo_service.engine.batch import (
    cut_task,
    iter_cutouts,
    multi_extension_chunks,
    plan_units,
    run_tasks,
    write_multi_extension,
)
from vo_service.engine.cutout import CutoutResult, StampStatus
from vo_service.engine.executors import Executor
from vo_service.engine.mosaic import stitched_cutouts
from vo_service.engine.reading import OpenImage
from vo_service.engine.resample import DEFAULT_METHOD, METHODS
from vo_service.engine.spectral import CutoutError
from vo_service.shapes import CenterSize, Shape


def _icrs_degrees(coordinates) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(coordinates, SkyCoord):
        icrs = coordinates.icrs
        return np.atleast_1d(icrs.ra.deg), np.atleast_1d(icrs.dec.deg)
    if isinstance(coordinates, str):
        icrs = SkyCoord(coordinates, unit="deg").icrs
        return np.atleast_1d(icrs.ra.deg), np.atleast_1d(icrs.dec.deg)
    pairs = np.asarray(coordinates, dtype=float)
    if pairs.ndim == 1:
        pairs = pairs[None, :]
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError("coordinates must be a SkyCoord, an (ra, dec) pair or a list of them")
    return pairs[:, 0], pairs[:, 1]


def _size(size) -> tuple[float, float, str]:
    """(width, height, unit) from an int, a (ny, nx) tuple or an angular Quantity."""
    if isinstance(size, u.Quantity):
        values = np.atleast_1d(size.value)
        unit = "pix" if size.unit == u.pix else "arcsec"
        if unit == "arcsec":
            values = np.atleast_1d(size.to_value(u.arcsec))
    else:
        values = np.atleast_1d(np.asarray(size, dtype=float))
        unit = "pix"
    if values.size == 1:
        return float(values[0]), float(values[0]), unit
    height, width = float(values[0]), float(values[1])  # astrocut order: (ny, nx)
    return width, height, unit


def first_image_hdu(path: str | Path) -> int:
    """Index of the first image HDU with a celestial WCS (lookup-table distortions are
    read from the file's WCSDVARR/D2IMARR extensions, as astropy requires)."""
    with fits.open(path, lazy_load_hdus=True) as hdus, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        for index, hdu in enumerate(hdus):
            if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) \
                    and int(hdu.header.get("NAXIS", 0)) >= 2 \
                    and hdu.name not in ("WCSDVARR", "D2IMARR") \
                    and WCS(hdu.header, fobj=hdus).has_celestial:
                return index
    raise ValueError(f"{path} has no image HDU with a celestial WCS")


def cutout(files: str | Path | Sequence[str | Path], coordinates, size, *,
           output_dir: str | Path | None = None, single_outfile: bool = False,
           pad: bool = False, hdu: int | None = None, workers: int = 1,
           executor: Executor | None = None, stitch: bool | str = False
           ) -> list[fits.HDUList] | list[Path]:
    """Cut every target from every file.

    Parameters
    ----------
    files : one FITS path or several.
    coordinates : SkyCoord (any frame, scalar or array), an (ra, dec) ICRS degree pair, or
        a list of pairs.
    size : pixels (int, or (ny, nx) like astrocut) or an angular Quantity (scalar or
        (ny, nx)).
    output_dir : write FITS files there and return their paths; None returns HDULists.
    single_outfile : all stamps in one multi-extension file (or one HDUList).
    pad : pad stamps at image edges to the full size (NaN / BLANK).
    hdu : the image HDU of every file (default: the first image with a celestial WCS).
    workers : files cut in parallel (1-16 threads).
    executor : where the files are cut instead: any `vo_service.engine.executors`
        ``Executor`` (``LocalExecutor`` threads, ``ProcessExecutor`` processes,
        ``DaskExecutor`` on a Dask cluster); left running for further calls.
    stitch : treat the files as tiles of mosaics (grouped by FILTER, PRODTYPE, BUNIT) and
        make one stamp per target and mosaic, on the grid of the tile holding the target,
        filled across tile edges from the other tiles: exact copies from tiles on the same
        pixel grid, others resampled (True or ``"interp"``: bilinear; ``"flux"``:
        flux-conserving). See `vo_service.engine.stitch`.

    Returns
    -------
    list of HDUList (one per stamp, or one in all with single_outfile) or list of Path.
    Targets that miss a file are skipped with a warning, as astrocut does.
    """
    paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
    ras, decs = _icrs_degrees(coordinates)
    width, height, unit = _size(size)
    regions = tuple(CenterSize(float(ra), float(dec), width, height, unit)
                    for ra, dec in zip(ras, decs, strict=True))
    hdus = [first_image_hdu(path) if hdu is None else hdu for path in paths]
    if stitch:
        method = DEFAULT_METHOD if stitch is True else str(stitch)
        if method not in METHODS:
            raise ValueError(f"stitch must be True or one of {', '.join(METHODS)}, not "
                             f"{stitch!r}")
        outcomes = [(paths[position], result) for position, result in stitched_cutouts(
            list(zip(paths, hdus, strict=True)), regions, method=method, pad=pad)]
    else:
        units = plan_units(list(zip(paths, hdus, strict=True)), regions, pad=pad)
        per_unit = dict(run_tasks(units, cut_task, workers=workers, executor=executor))
        outcomes = [(unit.path, result) for position, unit in enumerate(units)
                    for result in per_unit[position]]
    stamps: list[tuple[Path, CutoutResult]] = []
    for path, result in outcomes:
        if result.has_stamp:
            stamps.append((path, result))
        else:
            warnings.warn(f"target {result.index} ({ras[result.index]:.6f}, "
                          f"{decs[result.index]:.6f}) not cut from {path.name}: "
                          f"{result.status} {result.message}".rstrip(), stacklevel=2)
    if single_outfile:
        results = [result for _, result in stamps]
        if output_dir is None:
            return [fits.HDUList.fromstring(b"".join(
                multi_extension_chunks(results, extname=_target_extname)))]
        name = f"cutout_{ras[0]:.6f}_{decs[0]:.6f}_{_size_text(width, height, unit)}.fits"
        return [write_multi_extension(results, Path(output_dir) / name,
                                      extname=_target_extname)]
    if output_dir is None:
        return [result.to_hdulist() for _, result in stamps]
    written = []
    for path, result in stamps:
        ra, dec = ras[result.index], decs[result.index]
        stem = path.name.split(".")[0]
        name = f"{stem}_{ra:.6f}_{dec:.6f}_{_size_text(width, height, unit)}_cutout.fits"
        written.append(result.write(Path(output_dir) / name))
    return written


def _target_extname(result: CutoutResult) -> str:
    return f"CUTOUT{result.index}"


def _size_text(width: float, height: float, unit: str) -> str:
    return f"{width:g}-x-{height:g}{'' if unit == 'pix' else unit}"


def fits_cut(input_files, coordinates, cutout_size=25, *, extension=None,
             single_outfile: bool = True, output_dir: str | Path = ".",
             memory_only: bool = False, pad: bool = False):
    """astrocut-compatible spelling of `cutout` (no WCS correction is ever needed: stamps
    keep the source WCS exactly). Returns a path (single_outfile), paths, or HDULists."""
    results = cutout(input_files, coordinates, cutout_size,
                     output_dir=None if memory_only else output_dir,
                     single_outfile=single_outfile, pad=pad, hdu=extension)
    if single_outfile and not memory_only:
        return results[0]
    return results


def cut(path: str | Path, hdu: int | str, region: Shape, *,
        band: tuple[float, float] | None = None, time: tuple[float, float] | None = None,
        pol: list[str] | None = None, pad: bool = False, max_pixels: int | None = None,
        origfile: str | None = None) -> CutoutResult:
    """Cut one region out of one image HDU.

    Parameters
    ----------
    path, hdu : the FITS file and the HDU index (or EXTNAME) of the image.
    region : a `vo_service.shapes` Circle, Range, Polygon or CenterSize (ICRS).
    band : (lo, hi) barycentric wavelength in metres; selects channels of a cube.
    time : (lo, hi) MJD; selects a time axis, or checks the observation time of an image.
    pol : Stokes labels (I, Q, U, V, RR, ...); selects along a STOKES axis.
    pad : pad a partially overlapping stamp to the full requested size (NaN or BLANK).
    max_pixels : refuse (CutoutError) a stamp with more pixels than this.
    origfile : the name recorded as ORIGFILE/ORIG_FLE (default: the file name).

    Returns a CutoutResult with status 'ok', 'partial' or 'no-overlap'.
    Raises CutoutError when the request cannot be answered on this image.
    """
    with OpenImage(path, hdu) as image:
        result = next(iter_cutouts(image, [region], band=band, time=time, pol=pol, pad=pad,
                                   max_pixels=max_pixels, origfile=origfile))
    if result.status == StampStatus.ERROR:
        raise CutoutError(result.message)
    return result
