"""Python API for time series: one target (or a moving one) across many epochs.

>>> import vo_service
>>> stack = vo_service.time_series((53.3, -27.85), 64, files=sorted(glob("epochs/*.fits")))
>>> stack = vo_service.time_series((53.3, -27.85), 64, index="state/index.sqlite",
...                                band="VIS", product_type="BGSUB", time=(60300, 60700))
>>> curve = vo_service.light_curve((53.3, -27.85), index="state/index.sqlite",
...                                band="VIS", product_type="BGSUB")

Epochs come either from local ``files`` (times read from their headers) or from an
archive ``index`` (an ``ArchiveIndex`` or the path of its SQLite file, ``vo-service
index`` makes one), filtered by collection, instrument, band, product type and a TIME
interval (MJD).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from astropy.io import fits
from astropy.table import Table

from vo_service.catalogs.ephemerides import Ephemeris, read_ephemeris
from vo_service.engine.photometry import ApertureSpec
from vo_service.engine.stack import Epoch, cut_epochs, epochs_from_files, stack_bytes
from vo_service.engine.writing import atomic_write
from vo_service.products import timeseries as series

__all__ = ["light_curve", "time_series"]


def _tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _position(coordinates) -> tuple[float | None, float | None]:  # noqa: ANN001
    if coordinates is None:
        return None, None
    from vo_service.engine.api import _icrs_degrees

    ras, decs = _icrs_degrees(coordinates)
    if len(ras) != 1:
        raise ValueError("a time series follows one target: give one position")
    return float(ras[0]), float(decs[0])


def _size(size) -> tuple[float, str]:  # noqa: ANN001
    from vo_service.engine.api import _size as engine_size

    width, height, unit = engine_size(size)
    if width != height:
        raise ValueError("time-series stamps are square: give one size")
    return width, unit


def _index(index):  # noqa: ANN001, ANN202
    from vo_service.archive.index import ArchiveIndex

    return ArchiveIndex(index) if isinstance(index, str | Path) else index


def _request(coordinates, size, *, collection, instrument, band, product_type,  # noqa: ANN001
             time, ephemeris, fixed, pad) -> series.SeriesRequest:
    ra, dec = _position(coordinates)
    width, unit = _size(size)
    if isinstance(ephemeris, str | Path | bytes):
        ephemeris = read_ephemeris(ephemeris)
    return series.SeriesRequest(
        ra, dec, width, unit, _tuple(collection), _tuple(instrument), _tuple(band),
        _tuple(product_type), tuple(time) if time is not None else None, pad,
        ephemeris, tuple(fixed) if fixed is not None else None)


def _file_epochs(files, request: series.SeriesRequest,  # noqa: ANN001
                 hdu: int | None) -> list[Epoch]:
    paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
    hdus = None if hdu is None else [hdu] * len(paths)
    if request.ephemeris is None:
        assert request.ra is not None and request.dec is not None
        return epochs_from_files(paths, request.ra, request.dec, hdus)
    epochs = []
    for epoch in epochs_from_files(paths, 0.0, 0.0, hdus):
        if epoch.t_mid is None:
            continue
        mid = min(max(epoch.t_mid, request.ephemeris.mjd[0]), request.ephemeris.mjd[-1])
        ra, dec = request.ephemeris.position_at(mid)
        if epoch.t_end is not None and (epoch.t_end < request.ephemeris.mjd[0]
                                        or epoch.t_start > request.ephemeris.mjd[-1]):
            continue
        epochs.append(Epoch(epoch.path, epoch.hdu, epoch.image_id, float(ra[0]), float(dec[0]),
                            epoch.t_start, epoch.t_end, epoch.exptime, "path", epoch.scan))
        if request.fixed is not None:
            epochs.append(Epoch(epoch.path, epoch.hdu, epoch.image_id, *request.fixed,
                                epoch.t_start, epoch.t_end, epoch.exptime, "fixed", epoch.scan))
    return epochs


def time_series(coordinates=None, size=64, *, files=None, index=None,  # noqa: ANN001
                collection: str | Sequence[str] | None = None,
                instrument: str | Sequence[str] | None = None,
                band: str | Sequence[str] | None = None,
                product_type: str | Sequence[str] | None = None,
                time: tuple[float, float] | None = None,
                ephemeris: Ephemeris | str | Path | None = None,
                fixed: tuple[float, float] | None = None, cube: bool = False,
                method: str = "bilinear", pad: bool = False, hdu: int | None = None,
                output: str | Path | None = None, workers: int = 1) -> fits.HDUList | Path:
    """A time-series stack of one target: one exact stamp per epoch, in time order.

    Parameters
    ----------
    coordinates : the target (SkyCoord, an (ra, dec) ICRS degree pair or a string); None
        with an ``ephemeris``.
    size : pixels, or an angular Quantity (square stamps).
    files, index : where the epochs come from: local FITS files, or an archive index.
    collection, instrument, band, product_type : the images to use (index only).
    time : (start, end) MJD: only epochs overlapping it.
    ephemeris : a moving target (Ephemeris, or a VOTable/FITS/CSV file of time, RA, Dec);
        each stamp is centred on the position at the exposure's mid-time.
    fixed : with an ephemeris, also cut this (ra, dec) at every epoch (``FIXED<n>``).
    cube : resample every epoch onto the first full stamp's grid (``reproject``; method
        'bilinear' or 'exact') and return the aligned cube instead.
    output : write the FITS file there and return its path; None returns an HDUList.

    Returns
    -------
    HDUList (primary, ``EPOCH<n>`` stamps, ``EPOCHS`` table; or ``CUBE`` + ``EPOCHS``) or
    the Path written. Epochs without a stamp are rows of ``EPOCHS`` with their status.
    """
    request = _request(coordinates, size, collection=collection, instrument=instrument,
                       band=band, product_type=product_type, time=time, ephemeris=ephemeris,
                       fixed=fixed, pad=pad)
    if (files is None) == (index is None):
        raise ValueError("give either files or index")
    if index is not None:
        archive = _index(index)
        content = (series.cube_product(archive, request, method, workers=workers) if cube
                   else series.stack_product(archive, request, workers=workers))
    else:
        epochs = _file_epochs(files, request, hdu)
        stamps = cut_epochs(epochs, request.size, request.size, request.size_unit, pad=pad,
                            workers=workers)
        if cube:
            from vo_service.engine.stack_cube import cube_bytes

            content = cube_bytes(stamps, method, request.description())
        else:
            content = stack_bytes(stamps, request.description())
    if output is not None:
        return atomic_write(output, [content])
    return fits.HDUList.fromstring(content)


def light_curve(coordinates=None, *, files=None, index=None,  # noqa: ANN001
                collection: str | Sequence[str] | None = None,
                instrument: str | Sequence[str] | None = None,
                band: str | Sequence[str] | None = None,
                product_type: str | Sequence[str] | None = None,
                time: tuple[float, float] | None = None,
                ephemeris: Ephemeris | str | Path | None = None,
                aperture: float = 1.0, annulus: tuple[float, float] = (2.0, 3.0),
                hdu: int | None = None, plot: str | Path | None = None,
                workers: int = 1) -> Table:
    """Aperture photometry of the target on every epoch, as a Table (time, flux, flux_err,
    background, flags, status, image_id, ...; the flux unit is the images' BUNIT).

    ``aperture`` and ``annulus`` (inner, outer) are radii in arcsec. With an ``index``,
    errors come from each image's RMS product when the archive has one, otherwise from
    the background annulus. ``plot``: also write the PNG plot there.
    """
    spec = ApertureSpec(aperture, *annulus)
    request = _request(coordinates, 1.0, collection=collection, instrument=instrument,
                       band=band, product_type=product_type, time=time, ephemeris=ephemeris,
                       fixed=None, pad=False)
    if (files is None) == (index is None):
        raise ValueError("give either files or index")
    if index is not None:
        points = series.light_curve(_index(index), request, spec, workers=workers)
    else:
        points = series.measure_epochs(_file_epochs(files, request, hdu), spec,
                                       workers=workers)
    if plot is not None:
        atomic_write(plot, [series.light_curve_png(points, request)])
    return Table.read(io.BytesIO(series.light_curve_votable(points, spec, request)),
                      format="votable")
