"""Time-series UWS jobs: one target (or a moving one) through every epoch of the archive.

A job with ``SERIES`` is of this kind (docs/async.md). Parameters: ``SERIES`` (``stack``,
``cube``, ``lightcurve``; several with commas or repeated), ``RA``/``DEC`` (degrees or
sexagesimal) or ``UPLOAD=<name>,param:<name>`` with an ephemeris (VOTable, FITS table or
CSV of time, RA, Dec; optional rates) and optionally ``FIXED`` (``ra dec``: also cut this
fixed position at every epoch), ``SIZE`` and ``SIZE_UNIT``, ``COLLECTION``,
``INSTRUMENT``, ``BANDNAME``, ``PRODUCTTYPE`` (repeatable), ``TIME`` (``lo hi`` MJD),
``CUBE_METHOD`` (``bilinear`` or ``exact``), ``APERTURE`` and ``ANNULUS`` (arcsec),
``PAD``.

Results: ``stack`` (the multi-extension FITS), ``epochs`` (the epochs as a VOTable: image,
times, stamp centre, target pixel, status), one FITS result per stamp (``epoch-001`` …,
``fixed-001`` …) for galleries, and on request ``cube``, ``lightcurve`` (VOTable) and
``lightcurve-png``. A job that finds no epoch at all ends in ERROR.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vo_service.catalogs.columns import parse_angle
from vo_service.catalogs.ephemerides import EphemerisError, read_ephemeris
from vo_service.engine.photometry import ApertureSpec
from vo_service.engine.stack import EpochStamp, stamp_hdu_bytes
from vo_service.engine.stack_cube import METHODS
from vo_service.engine.writing import empty_primary_bytes
from vo_service.jobs.context import JobContext, JobFailed, JobParameterError
from vo_service.jobs.job_files import Upload
from vo_service.jobs.store import Parameter, ResultFile
from vo_service.products import timeseries as series

SERIES_KINDS = ("stack", "cube", "lightcurve")
MULTI_VALUED = {"SERIES", "COLLECTION", "INSTRUMENT", "BANDNAME", "PRODUCTTYPE"}
SINGLE_VALUED = {"RA", "DEC", "UPLOAD", "FIXED", "SIZE", "SIZE_UNIT", "TIME", "CUBE_METHOD",
                 "APERTURE", "ANNULUS", "PAD", "RESPONSEFORMAT"}
SIZE_UNITS = ("pix", "arcsec", "arcmin", "deg")
FITS_MIME = "application/fits"
VOTABLE_MIME = "application/x-votable+xml"


@dataclass(frozen=True)
class SeriesJobRequest:
    """A time-series job's parameters, parsed."""

    kinds: tuple[str, ...]
    request: series.SeriesRequest | None  # None while the ephemeris has not come yet
    upload_name: str | None
    method: str
    aperture: ApertureSpec


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise JobParameterError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise JobParameterError(f"{name} must be a finite number, got {text!r}")
    return value


def _numbers(name: str, text: str, count: int) -> tuple[float, ...]:
    parts = text.replace(",", " ").split()
    if len(parts) != count:
        raise JobParameterError(f"{name} needs {count} numbers separated by spaces, got "
                                f"{text!r}")
    return tuple(_number(name, part) for part in parts)


def _angle(name: str, text: str, is_ra: bool) -> float:
    try:
        return parse_angle(text, is_ra=is_ra)
    except ValueError as exc:
        raise JobParameterError(f"{name}: {exc}") from None


def parse_series_job(parameters: Sequence[Parameter], uploads: Mapping[str, Upload], *,
                     complete: bool = True) -> SeriesJobRequest:
    """Parse and check a time-series job; JobParameterError says what to fix."""
    values: dict[str, list[str]] = {}
    for parameter in parameters:
        values.setdefault(parameter.name.upper(), []).append(parameter.value)
    unknown = sorted(set(values) - MULTI_VALUED - SINGLE_VALUED)
    if unknown:
        raise JobParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for a time-series job (SERIES); "
            "see docs/async.md: SERIES, RA, DEC, UPLOAD, FIXED, SIZE, SIZE_UNIT, "
            "COLLECTION, INSTRUMENT, BANDNAME, PRODUCTTYPE, TIME, CUBE_METHOD, APERTURE, "
            "ANNULUS, PAD")
    for name in SINGLE_VALUED:
        if len(values.get(name, [])) > 1:
            raise JobParameterError(f"{name} is single-valued but was given "
                                    f"{len(values[name])} times; send it once")

    def one(name: str) -> str | None:
        return values.get(name, [None])[0]

    kinds = tuple(dict.fromkeys(word.strip().lower() for value in values.get("SERIES", [])
                                for word in value.replace(",", " ").split()))
    wrong = [kind for kind in kinds if kind not in SERIES_KINDS]
    if wrong or not kinds:
        raise JobParameterError(f"SERIES must list {', '.join(SERIES_KINDS)} (one or more), "
                                f"got {', '.join(values.get('SERIES', [])) or 'nothing'}")
    size = _number("SIZE", one("SIZE")) if one("SIZE") is not None else 64.0
    unit = (one("SIZE_UNIT") or "pix").strip().lower()
    if unit not in SIZE_UNITS:
        raise JobParameterError(f"SIZE_UNIT must be one of {', '.join(SIZE_UNITS)}, got "
                                f"{unit!r}")
    method = (one("CUBE_METHOD") or "bilinear").strip().lower()
    if method not in METHODS:
        raise JobParameterError(f"CUBE_METHOD must be one of {', '.join(METHODS)}, got "
                                f"{method!r}")
    time = _numbers("TIME", one("TIME"), 2) if one("TIME") else None
    fixed = None
    if one("FIXED"):
        parts = one("FIXED").replace(",", " ").split()
        if len(parts) != 2:
            raise JobParameterError(f"FIXED needs 'ra dec', got {one('FIXED')!r}")
        fixed = (_angle("FIXED", parts[0], True), _angle("FIXED", parts[1], False))
    radius = _number("APERTURE", one("APERTURE")) if one("APERTURE") else 1.0
    annulus = _numbers("ANNULUS", one("ANNULUS"), 2) if one("ANNULUS") else (
        2.0 * radius, 3.0 * radius)
    try:
        spec = ApertureSpec(radius, *annulus)
    except ValueError as exc:
        raise JobParameterError(f"APERTURE/ANNULUS: {exc}") from None
    ra = _angle("RA", one("RA"), True) if one("RA") else None
    dec = _angle("DEC", one("DEC"), False) if one("DEC") else None
    upload_name = _upload_part(one("UPLOAD")) if one("UPLOAD") else None
    ephemeris = None
    if upload_name is not None:
        upload = uploads.get(upload_name.upper()) or uploads.get(upload_name)
        if upload is not None:
            try:
                ephemeris = read_ephemeris(upload.path, filename=upload.filename)
            except EphemerisError as exc:
                raise JobParameterError(f"UPLOAD {upload_name}: {exc}") from None
        elif complete:
            raise JobParameterError(f"UPLOAD names the part {upload_name!r} but the job has "
                                    "no file of that name; send the ephemeris in a multipart "
                                    "part of that name")
    if (ra is None) != (dec is None):
        raise JobParameterError("give both RA and DEC")
    if ra is None and upload_name is None and complete:
        raise JobParameterError("a time-series job needs RA and DEC, or an ephemeris "
                                "(UPLOAD=<name>,param:<name>); add them with POST …/parameters")
    if fixed is not None and upload_name is None:
        raise JobParameterError("FIXED goes with an ephemeris (UPLOAD): it cuts a fixed "
                                "position beside a moving target's path")
    pad = (one("PAD") or "false").strip().lower() in ("true", "1", "yes")
    request = None
    if ephemeris is not None or ra is not None:
        try:
            request = series.SeriesRequest(
                ra, dec, size, unit, tuple(values.get("COLLECTION", [])),
                tuple(values.get("INSTRUMENT", [])), tuple(values.get("BANDNAME", [])),
                tuple(values.get("PRODUCTTYPE", [])), time, pad, ephemeris, fixed)
        except series.SeriesError as exc:
            raise JobParameterError(str(exc)) from None
    return SeriesJobRequest(kinds, request, upload_name, method, spec)


def _upload_part(value: str) -> str:
    table, comma, uri = value.partition(",")
    if not comma or not uri.strip().lower().startswith("param:") or not uri.strip()[6:]:
        raise JobParameterError(f"UPLOAD must be '<name>,param:<part>' with the ephemeris in "
                                f"the multipart part <part>, got {value!r}")
    return uri.strip()[len("param:"):]


def _stamp_file(stamp: EpochStamp) -> bytes:
    """One epoch's stamp as its own FITS file (empty primary + the EPOCH<n> extension)."""
    return empty_primary_bytes() + stamp_hdu_bytes(stamp)


class TimeSeriesJob:
    """The ``timeseries`` job kind."""

    name = "timeseries"

    def __init__(self, resources: object) -> None:
        self.resources = resources

    def validate(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
                 ) -> float:
        """Each value's syntax (and the ephemeris once it is there)."""
        parsed = parse_series_job(parameters, uploads, complete=False)
        limit = self.resources.settings.limits.max_cutout_pixels
        if parsed.request is not None and parsed.request.size_unit == "pix" and \
                parsed.request.size ** 2 > limit:
            raise JobParameterError(f"SIZE {parsed.request.size:g} pix makes stamps larger "
                                    f"than the limit of {limit} pixels")
        return 5.0

    def check_ready(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
                    ) -> None:
        """A JobParameterError naming what is missing before the job may run."""
        parse_series_job(parameters, uploads)

    def run(self, context: JobContext) -> None:
        parsed = parse_series_job(context.parameters, context.uploads)
        request = parsed.request
        assert request is not None
        index, cache = self.resources.index, self.resources.cache
        try:
            stamps = series.series_stamps(index, request)
        except series.SeriesError as exc:
            raise JobFailed(f"UsageError: {exc}") from exc
        total = len(stamps) + 2
        context.set_progress(0, total)
        if not stamps:
            raise JobFailed("UsageError: no overlap: no image of the chosen collection, "
                            "instrument, band and product type (and TIME) covers the target")
        results = [self._write(context, "epochs", "epochs.xml", VOTABLE_MIME,
                               series.epochs_votable(stamps, request))]
        if "stack" in parsed.kinds:
            results.append(self._write(context, "stack", "stack.fits", FITS_MIME,
                                       series.stack_product(index, request, cache,
                                                            stamps=stamps)))
        context.add_results(results)
        (context.job_dir / "stamps").mkdir(exist_ok=True)
        for done, stamp in enumerate(stamps, start=1):
            if context.should_stop():
                return
            if stamp.has_stamp:
                name = f"{'fixed' if stamp.epoch.kind == 'fixed' else 'epoch'}-{stamp.number:03d}"
                context.add_results([self._write(context, name, f"stamps/{name}.fits",
                                                 FITS_MIME, _stamp_file(stamp))])
            context.set_progress(done, total)
        if "cube" in parsed.kinds:
            try:
                content = series.cube_product(index, request, parsed.method, cache,
                                              stamps=stamps)
                context.add_results([self._write(context, "cube", "cube.fits", FITS_MIME,
                                                 content)])
            except series.SeriesError as exc:
                context.add_results([self._write(context, "cube", "cube.txt", "text/plain",
                                                 f"UsageError: {exc}\n".encode())])
        context.set_progress(total - 1, total)
        if "lightcurve" in parsed.kinds:
            points = series.light_curve(index, request, parsed.aperture)
            context.add_results([
                self._write(context, "lightcurve", "lightcurve.xml", VOTABLE_MIME,
                            series.light_curve_votable(points, parsed.aperture, request)),
                self._write(context, "lightcurve-png", "lightcurve.png", "image/png",
                            series.light_curve_png(points, request))])
        context.set_progress(total, total)

    @staticmethod
    def _write(context: JobContext, result_id: str, relative: str, mime: str,
               content: bytes) -> ResultFile:
        path = context.job_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.part")
        temporary.write_bytes(content)
        temporary.replace(path)
        return ResultFile(result_id, relative, mime, len(content))
