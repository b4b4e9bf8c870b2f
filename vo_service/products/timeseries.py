"""What a time-series request means: the epochs of one target in the archive index, cut
through the engine, kept in the cutout cache.

- :func:`find_epochs`: every image of the chosen collection/instrument/band/product type
  (and TIME interval) whose footprint meets the target's stamp, in time order;
- :func:`series_stamps`: one exact stamp per epoch (:mod:`vo_service.engine.stack`);
- :func:`moving_epochs`: images whose exposure overlaps an ephemeris and that lie near its
  path, each with the position interpolated at its mid-exposure time;
- products (bytes, cached): the multi-extension stack, the aligned cube
  (:mod:`vo_service.engine.stack_cube`), the light curve as VOTable and PNG.

Used by the Python API, the CLI, the ``timeseries`` UWS job kind and the web page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from astropy.io.votable.tree import Info, VOTableFile
from astropy.table import Table

from vo_service.archive.records import ImageRecord
from vo_service.cache import CutoutCache, make_key, source_identity
from vo_service.catalogs.ephemerides import Ephemeris, path_extent
from vo_service.engine.photometry import FLAG_MEANINGS, ApertureSpec, Measurement, measure_stamp
from vo_service.engine.physical import header_scaling, physical_values
from vo_service.engine.reading import OpenImage
from vo_service.engine.stack import Epoch, EpochStamp, cut_epochs, stack_bytes, time_order
from vo_service.shapes import ANGLE_UNITS_DEG, Circle
from vo_service.votables import write_xml

KEY_VERSION = 1  # bump when the bytes of a series product change for the same request
RMS_PRODUCT_TYPES = ("RMS", "NOISE", "ERR", "ERROR", "SIGMA")
DEFAULT_PIXEL_ARCSEC = 1.0  # pixel scale assumed for a search radius when none is known
MAX_SERIES_EPOCHS = 10_000  # epochs (stamps) of one series: its stack is built in memory


class SeriesError(ValueError):
    """A request that cannot be answered (bad values, nothing to align); says what to fix."""


@dataclass(frozen=True)
class SeriesRequest:
    """One target (or a moving one) and the images to follow it in.

    ``size`` in ``size_unit`` (pix, arcsec, arcmin, deg); filters are tuples of accepted
    values (empty: any); ``time`` an MJD interval; ``fixed`` a second, fixed position cut
    beside a moving target's path stamps (astrocut ``center_on_path=False``).
    """

    ra: float | None
    dec: float | None
    size: float = 64.0
    size_unit: str = "pix"
    collection: tuple[str, ...] = ()
    instrument: tuple[str, ...] = ()
    band: tuple[str, ...] = ()
    product_type: tuple[str, ...] = ()
    time: tuple[float, float] | None = None
    pad: bool = False
    ephemeris: Ephemeris | None = field(default=None, compare=False)
    fixed: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.size) and self.size > 0):
            raise SeriesError(f"size must be a positive number, got {self.size}")
        if self.size_unit not in ("pix", *ANGLE_UNITS_DEG):
            raise SeriesError(f"size unit must be pix, arcsec, arcmin or deg, not "
                              f"{self.size_unit!r}")
        if self.ephemeris is None and (self.ra is None or self.dec is None):
            raise SeriesError("give a target position (RA, Dec) or an ephemeris")
        if self.time is not None and self.time[0] > self.time[1]:
            raise SeriesError(f"TIME {self.time[0]} {self.time[1]}: the start is after the end")

    def filters(self) -> dict[str, list[object]]:
        """ArchiveIndex.search keywords of the image choice."""
        found: dict[str, list[object]] = {"dptype": ["image"]}
        for name, values in (("collection", self.collection), ("instrument", self.instrument),
                             ("band_name", self.band), ("product_type", self.product_type)):
            if values:
                found[name] = list(values)
        return found

    def description(self) -> list[tuple[str, object, str]]:
        """Primary-header cards saying what was asked."""
        cards: list[tuple[str, object, str]] = []
        if self.ra is not None and self.dec is not None:
            cards += [("TARGRA", self.ra, "[deg] ICRS RA of the target"),
                      ("TARGDEC", self.dec, "[deg] ICRS Dec of the target")]
        if self.ephemeris is not None:
            start, end = self.ephemeris.span
            cards += [("MOVING", True, "stamps follow an ephemeris"),
                      ("EPHSTART", start, "[d] first time of the ephemeris (MJD)"),
                      ("EPHEND", end, "[d] last time of the ephemeris (MJD)"),
                      ("EPHINTRP", "hermite" if self.ephemeris.ra_rate is not None
                       else "great-circle", "interpolation between ephemeris rows")]
        cards.append(("STMPSIZE", float(self.size), f"stamp size ({self.size_unit})"))
        for key, values in (("COLLECTN", self.collection), ("INSTRUME", self.instrument),
                            ("BANDNAME", self.band), ("PRODTYPE", self.product_type)):
            if values:
                cards.append((key, ",".join(values)[:60], "image choice"))
        if self.time is not None:
            cards += [("TIMEMIN", self.time[0], "[d] TIME interval start (MJD)"),
                      ("TIMEMAX", self.time[1], "[d] TIME interval end (MJD)")]
        return cards


def _radius_deg(request: SeriesRequest, pixel_arcsec: float) -> float:
    """Half the diagonal of the stamp, in degrees."""
    if request.size_unit == "pix":
        side = request.size * pixel_arcsec / 3600.0
    else:
        side = request.size * ANGLE_UNITS_DEG[request.size_unit]
    return max(side * math.sqrt(2.0) / 2.0, 1e-7)


def _near(index, ra: float, dec: float, request: SeriesRequest,  # noqa: ANN001 - ArchiveIndex
          time: tuple[float, float] | None) -> list[ImageRecord]:
    """Images of the request's choice whose footprint meets the stamp around (ra, dec)."""
    filters = request.filters()
    if time is not None:
        filters["time"] = [time]
    probe = Circle(ra % 360.0, dec, _radius_deg(request, DEFAULT_PIXEL_ARCSEC))
    records, _ = index.search(pos=[probe], **filters)
    if request.size_unit == "pix" and records:
        coarsest = max((r.s_resolution or DEFAULT_PIXEL_ARCSEC) for r in records)
        if coarsest > DEFAULT_PIXEL_ARCSEC:
            probe = Circle(ra % 360.0, dec, _radius_deg(request, coarsest))
            records, _ = index.search(pos=[probe], **filters)
    return [r for r in records if r.product_kind is None]  # PSF models are no epochs


def _epoch(record: ImageRecord, ra: float, dec: float, kind: str = "target") -> Epoch:
    return Epoch(record.path, record.hdu, record.obs_publisher_did, ra % 360.0, dec,
                 record.t_min, record.t_max, record.t_exptime, kind)


def find_epochs(index, request: SeriesRequest) -> list[Epoch]:  # noqa: ANN001 - ArchiveIndex
    """The epochs of a fixed target: every chosen image whose footprint meets its stamp."""
    assert request.ra is not None and request.dec is not None
    records = _near(index, request.ra, request.dec, request, request.time)
    return time_order([_epoch(r, request.ra, request.dec) for r in records])


def moving_epochs(index, request: SeriesRequest) -> list[Epoch]:  # noqa: ANN001
    """Images whose exposure overlaps the ephemeris and that lie near its path, each with
    the path's position at its mid-exposure time (``kind='path'``); with ``request.fixed``
    also a ``'fixed'`` epoch per image. An image whose mid-time falls outside the
    ephemeris (its exposure only overlaps an end) is centred on the nearest end."""
    ephemeris = request.ephemeris
    assert ephemeris is not None
    start, end = ephemeris.span
    if request.time is not None:
        start, end = max(start, request.time[0]), min(end, request.time[1])
        if start > end:
            return []
    ra, dec, radius = path_extent(ephemeris)
    probe_radius = radius + _radius_deg(request, DEFAULT_PIXEL_ARCSEC)
    filters = request.filters()
    filters["time"] = [(start, end)]
    records, _ = index.search(pos=[Circle(ra, dec, min(probe_radius, 180.0))], **filters)
    coarsest = max((r.s_resolution or DEFAULT_PIXEL_ARCSEC for r in records), default=0.0)
    if request.size_unit == "pix" and coarsest > DEFAULT_PIXEL_ARCSEC:  # wider stamps
        probe_radius = radius + _radius_deg(request, coarsest)
        records, _ = index.search(pos=[Circle(ra, dec, min(probe_radius, 180.0))], **filters)
    epochs = []
    for record in records:
        if record.t_min is None:
            continue
        t_end = record.t_max if record.t_max is not None else record.t_min
        mid = min(max((record.t_min + t_end) / 2.0, ephemeris.mjd[0]), ephemeris.mjd[-1])
        at_ra, at_dec = ephemeris.position_at(mid)
        epochs.append(_epoch(record, float(at_ra[0]), float(at_dec[0]), "path"))
        if request.fixed is not None:
            epochs.append(_epoch(record, request.fixed[0], request.fixed[1], "fixed"))
    return time_order(epochs)


def series_epochs(index, request: SeriesRequest) -> list[Epoch]:  # noqa: ANN001
    """The epochs of a request: moving when it has an ephemeris, else fixed; SeriesError
    beyond MAX_SERIES_EPOCHS."""
    epochs = moving_epochs(index, request) if request.ephemeris is not None else find_epochs(
        index, request)
    if len(epochs) > MAX_SERIES_EPOCHS:
        raise SeriesError(f"{len(epochs):,} epochs match, more than {MAX_SERIES_EPOCHS:,} in "
                          "one series; choose one band and product type, or narrow TIME")
    return epochs


def series_stamps(index, request: SeriesRequest, workers: int = 1  # noqa: ANN001
                  ) -> list[EpochStamp]:
    """One exact stamp per epoch (with its status), in time order."""
    return cut_epochs(series_epochs(index, request), request.size, request.size,
                      request.size_unit, pad=request.pad, workers=workers)


# ---- products ---------------------------------------------------------------------------

def _key(what: str, epochs: Sequence[Epoch], request: SeriesRequest, **options: object) -> str:
    sources = [(source_identity(e.path, e.hdu), e.ra, e.dec, e.kind) for e in epochs]
    return make_key({"product": f"timeseries-{what}", "version": KEY_VERSION,
                     "sources": sources, "size": [request.size, request.size_unit],
                     "pad": request.pad, "options": options})


def stack_product(index, request: SeriesRequest,  # noqa: ANN001 - ArchiveIndex
                  cache: CutoutCache | None = None, workers: int = 1,
                  stamps: Sequence[EpochStamp] | None = None) -> bytes:
    """The multi-extension FITS stack (one exact stamp per epoch + the EPOCHS table);
    ``stamps``: the request's stamps when already cut (a cache miss then cuts nothing)."""
    epochs = [s.epoch for s in stamps] if stamps is not None else series_epochs(index, request)

    def compute() -> bytes:
        cut = stamps if stamps is not None else cut_epochs(
            epochs, request.size, request.size, request.size_unit, pad=request.pad,
            workers=workers)
        return stack_bytes(cut, request.description())

    return _cached(cache, _key("stack", epochs, request), compute)


def cube_product(index, request: SeriesRequest, method: str = "bilinear",  # noqa: ANN001
                 cache: CutoutCache | None = None, workers: int = 1,
                 stamps: Sequence[EpochStamp] | None = None) -> bytes:
    """The aligned cube (resampled on the first full epoch's grid), as FITS."""
    from vo_service.engine.stack_cube import CubeError, cube_bytes

    epochs = [s.epoch for s in stamps] if stamps is not None else series_epochs(index, request)

    def compute() -> bytes:
        cut = stamps if stamps is not None else cut_epochs(
            epochs, request.size, request.size, request.size_unit, pad=request.pad,
            workers=workers)
        try:
            return cube_bytes(cut, method, request.description())
        except CubeError as exc:
            raise SeriesError(str(exc)) from exc

    return _cached(cache, _key("cube", epochs, request, method=method), compute)


def _cached(cache: CutoutCache | None, key: str, compute) -> bytes:  # noqa: ANN001
    if cache is None:
        return compute()
    cached, _ = cache.open_or_compute(key, compute)
    with cached:
        return cached.content if cached.content is not None else cached.handle.read()


@dataclass(frozen=True)
class LightCurvePoint:
    """One epoch of a light curve."""

    stamp: EpochStamp
    measurement: Measurement
    rms_image: str | None  # ID of the RMS product used for the errors


def _rms_of(index, stamp: EpochStamp) -> tuple[np.ndarray | None, str | None]:  # noqa: ANN001
    """Pixels of the RMS product of the stamp's image over the same box, if the archive
    has one (a sibling product of the same observation with the same pixel grid)."""
    record = index.get(stamp.epoch.image_id)
    if record is None or stamp.result is None or stamp.result.pixel_box is None:
        return None, None
    for sibling in index.siblings(record):
        if (sibling.product_type or "").upper() not in RMS_PRODUCT_TYPES:
            continue
        if tuple(sibling.shape) != tuple(record.shape):
            continue
        box = stamp.result.pixel_box
        try:
            with OpenImage(sibling.path, sibling.hdu) as image:
                clipped = box.clip(image.fits_shape)
                if clipped != box:
                    continue
                values = physical_values(image.read(box), **header_scaling(image.header),
                                         dtype=np.float64)
        except (OSError, ValueError):
            continue
        return values, sibling.obs_publisher_did
    return None, None


def light_curve(index, request: SeriesRequest, spec: ApertureSpec,  # noqa: ANN001
                workers: int = 1) -> list[LightCurvePoint]:
    """Aperture photometry of the target on every epoch of the archive (stamps just
    large enough for the annulus), errors from the RMS product where there is one."""
    photometry = replace(request, size=photometry_size(spec), size_unit="arcsec", pad=False)
    return measure_epochs(series_epochs(index, photometry), spec,
                          lambda stamp: _rms_of(index, stamp), workers=workers)


def photometry_size(spec: ApertureSpec) -> float:
    """Side (arcsec) of the stamps photometry is done on: the annulus plus a margin."""
    return 2.0 * (spec.annulus_outer + 1.0)


def measure_epochs(epochs: Sequence[Epoch], spec: ApertureSpec,
                   rms_of: Callable[[EpochStamp], tuple[np.ndarray | None, str | None]]
                   | None = None, workers: int = 1) -> list[LightCurvePoint]:
    """Photometry on each epoch's stamp; ``rms_of`` finds the RMS pixels of a stamp."""
    size = photometry_size(spec)
    points = []
    for stamp in cut_epochs(epochs, size, size, "arcsec", workers=workers):
        rms, rms_id = rms_of(stamp) if rms_of is not None and stamp.has_stamp else (None, None)
        points.append(LightCurvePoint(stamp, measure_stamp(stamp, spec, rms), rms_id))
    return points


LIGHT_CURVE_FIELDS = (
    # name, unit, ucd, description
    ("epoch", None, "meta.number", "epoch number in time order"),
    ("time", "d", "time.epoch", "mid-exposure time (MJD, UTC)"),
    ("t_start", "d", "time.start", "start of the exposure (MJD, UTC)"),
    ("t_end", "d", "time.end", "end of the exposure (MJD, UTC)"),
    ("exptime", "s", "time.duration;obs.exposure", "exposure time"),
    ("flux", None, "phot.flux", "background-subtracted aperture flux (image BUNIT)"),
    ("flux_err", None, "stat.error;phot.flux", "1-sigma error of flux"),
    ("background", None, "phot.flux;instr.background", "background per pixel (subtracted)"),
    ("flags", None, "meta.code.qual", "bits: " + "; ".join(
        f"{bit} {text}" for bit, text in FLAG_MEANINGS.items())),
    ("error_source", None, "meta.note", "rms (RMS product) or background (annulus scatter)"),
    ("status", None, "meta.code.status", "stamp status: ok, partial, empty, no-overlap, error"),
    ("ra", "deg", "pos.eq.ra", "aperture centre (ICRS)"),
    ("dec", "deg", "pos.eq.dec", "aperture centre (ICRS)"),
    ("image_id", None, "meta.id;meta.dataset", "publisher DID of the image"),
    ("rms_image_id", None, "meta.id;meta.dataset", "publisher DID of the RMS product used"),
)


def light_curve_table(points: Sequence[LightCurvePoint]) -> Table:
    """The light curve as an astropy Table (one row per epoch, measured or not)."""
    columns: dict[str, list[object]] = {name: [] for name, *_ in LIGHT_CURVE_FIELDS}
    for point in points:
        epoch, found = point.stamp.epoch, point.measurement
        values = {"epoch": point.stamp.number, "time": epoch.t_mid, "t_start": epoch.t_start,
                  "t_end": epoch.t_end, "exptime": epoch.exptime, "flux": found.flux,
                  "flux_err": found.flux_err, "background": found.background,
                  "flags": found.flags, "error_source": found.error_source,
                  "status": point.stamp.status, "ra": epoch.ra, "dec": epoch.dec,
                  "image_id": epoch.image_id, "rms_image_id": point.rms_image or ""}
        for name in columns:
            columns[name].append(values[name])
    table = Table()
    for name, column_unit, _, text in LIGHT_CURVE_FIELDS:
        values = columns[name]
        if name in ("epoch", "flags"):
            table[name] = np.array(values, dtype=np.int32)
        elif name in ("error_source", "status", "image_id", "rms_image_id"):
            table[name] = np.array([str(v) for v in values], dtype=str)
        else:
            table[name] = np.array([math.nan if v is None else float(v) for v in values])
        if column_unit:
            table[name].unit = column_unit
        table[name].description = text
    return table


def light_curve_votable(points: Sequence[LightCurvePoint], spec: ApertureSpec,
                        request: SeriesRequest) -> bytes:
    """The light curve as a VOTable 1.4 (one row per epoch, measured or not)."""
    unit = next((p.measurement.unit for p in points if p.measurement.unit), "")
    table = light_curve_table(points)
    for name in ("flux", "flux_err", "background"):
        table[name].unit = _votable_unit(unit) if unit else None
    infos = [("aperture_radius_arcsec", str(spec.radius)),
             ("annulus_arcsec", f"{spec.annulus_inner} {spec.annulus_outer}"),
             ("flux_unit", unit or "unknown")]
    if request.ra is not None and request.dec is not None:
        infos.append(("target", f"{request.ra} {request.dec}"))
    return _votable_bytes(table, infos, "lightcurve",
                          [(name, ucd, text) for name, _, ucd, text in LIGHT_CURVE_FIELDS])


def _votable_bytes(table: Table, infos: Sequence[tuple[str, str]], name: str,
                   fields: Sequence[tuple[str, str | None, str]] = ()) -> bytes:
    """A results VOTable 1.4 of ``table``: text columns as ``char`` of any length with
    empty cells null, INFOs after QUERY_STATUS, FIELD UCDs and descriptions from
    ``fields`` (name, ucd, description)."""
    from astropy.table import MaskedColumn

    table = table.copy(copy_data=False)
    for column in table.colnames:
        if table[column].dtype.kind == "U":
            values = np.asarray(table[column])
            table[column] = MaskedColumn(values, mask=values == "", unit=table[column].unit,
                                         description=table[column].description)
    votable = VOTableFile.from_table(table)
    votable.version = "1.4"
    resource = votable.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    for key, value in infos:
        resource.infos.append(Info(name=key, value=value))
    votable_table = resource.tables[0]
    votable_table.name = name
    details = {field_name: (ucd, text) for field_name, ucd, text in fields}
    for votable_field in votable_table.fields:
        if votable_field.datatype in ("char", "unicodeChar"):
            votable_field.datatype = "char" if all(
                str(v).isascii() for v in table[votable_field.name]) else "unicodeChar"
            votable_field.arraysize = "*"
        if votable_field.name in details:
            votable_field.ucd, votable_field.description = details[votable_field.name]
    return write_xml(votable)


def _votable_unit(text: str) -> str | None:
    """A BUNIT as a VOUnit when astropy understands it (uJy, adu, ...), else None."""
    from astropy import units as u

    try:
        return u.Unit(text).to_string("vounit")
    except (ValueError, TypeError):
        return None


def epochs_votable(stamps: Sequence[EpochStamp], request: SeriesRequest) -> bytes:
    """The epochs of a series as a VOTable 1.4 (the manifest of a time-series job): per
    epoch its times, image, stamp centre (the predicted position of a moving target),
    the target's pixel on the stamp, pixel box, status and message."""
    from vo_service.engine.stack import EPOCH_COLUMNS, epoch_rows

    rows = epoch_rows(stamps)
    table = Table()
    for name, fmt, unit, text in EPOCH_COLUMNS:
        values = [row[name] for row in rows]
        if fmt == "D":
            table[name] = np.array([math.nan if v is None else float(v) for v in values])
        elif fmt == "J":
            table[name] = np.array([-1 if v is None else int(v) for v in values],
                                   dtype=np.int32)
        else:
            table[name] = np.array([str(v or "") for v in values], dtype=str)
        if unit:
            table[name].unit = unit
        table[name].description = text
    return _votable_bytes(table, [(key.lower(), str(value))
                                  for key, value, _ in request.description()], "epochs")


def light_curve_png(points: Sequence[LightCurvePoint], request: SeriesRequest) -> bytes:
    """The light curve as a PNG plot."""
    from vo_service.engine.lightcurve_plot import light_curve_png as plot

    unit = next((p.measurement.unit for p in points if p.measurement.unit), "")
    where = (f"RA {request.ra:.6f} Dec {request.dec:.6f}" if request.ra is not None
             and request.dec is not None else "moving target")
    return plot([p.stamp.epoch.t_mid for p in points], [p.measurement.flux for p in points],
                [p.measurement.flux_err for p in points], [p.measurement.flags for p in points],
                title=f"{where}: {sum(np.isfinite(p.measurement.flux) for p in points)} of "
                      f"{len(points)} epochs measured", unit=unit)
