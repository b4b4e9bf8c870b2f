"""Photometry on a catalog job's stamps: aperture fluxes of each target on its science
stamp of every band, errors from the RMS product, flags from the FLAG product, AB
magnitudes from the zero point.

A stamp holds its source image's pixels exactly, so each measurement reads, from the
science image and its RMS and FLAG siblings (same tile, band and pixel grid), only the
pixels of the stamp's box around the target (a window holding the background annulus):
the same numbers as the stamps' files, without opening tens of thousands of them. The
measuring itself is ``engine.photometry.measure_windows`` (many targets at once).

A target whose largest aperture reaches past its stamp (a stamp clipped at the image edge,
or smaller than the aperture) is refused: status ``clipped`` and a message, no numbers.
Zero points: the science header's ``MAGZERO``, ``ZP`` or ``PHOTZP``, else the archive
mapping's ``[zero_points]`` entry for the band; magnitudes are AB when the zero point is.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from astropy.wcs.utils import proj_plane_pixel_scales

from vo_service.archive.records import ImageRecord
from vo_service.engine.geometry import PixelBox
from vo_service.engine.photometry import FLAG_MEANINGS, measure_windows, window_half
from vo_service.engine.physical import header_scaling, physical_values
from vo_service.engine.reading import OpenImage
from vo_service.engine.tiles import read_boxes
from vo_service.products.catalog_products import SCIENCE_TYPES
from vo_service.products.product_options import PhotometryOptions

RMS_TYPES = ("RMS", "NOISE", "ERR", "ERROR", "SIGMA")
FLAG_TYPES = ("FLAG", "FLAGS", "MASK", "DQ")
ZERO_POINT_KEYWORDS = ("MAGZERO", "ZP", "PHOTZP")
TARGETS_PER_UNIT = 512
MAG_ERR_FACTOR = 2.5 / math.log(10.0)


@dataclass(frozen=True)
class PhotometryTarget:
    """One target's science stamp: catalog row (0-based), id, position, stamp box."""

    row: int
    target_id: str
    ra: float
    dec: float
    ranges: tuple[tuple[int, int], ...]  # 0-based half-open (x, y) box on the science image


@dataclass(frozen=True)
class PhotometryUnit:
    """The targets measured on one science image (with its RMS and FLAG siblings)."""

    science: ImageRecord
    rms: ImageRecord | None
    flag: ImageRecord | None
    targets: tuple[PhotometryTarget, ...]
    options: PhotometryOptions
    zero_point: float | None = None  # the mapping's, when the header has none


@dataclass
class PhotometryRow:
    """One target x band: fluxes per radius (the science image's BUNIT), magnitudes."""

    row: int
    target_id: str
    ra: float
    dec: float
    image_id: str
    band: str | None
    status: str  # ok | clipped | error
    message: str = ""
    flux: list[float] = field(default_factory=list)
    flux_err: list[float] = field(default_factory=list)
    mag: list[float] = field(default_factory=list)
    mag_err: list[float] = field(default_factory=list)
    background: float = math.nan
    flags: int = 0
    flag_bits: int = 0
    zero_point: float | None = None
    unit: str = ""
    error_source: str = ""


def is_science(record: ImageRecord) -> bool:
    """Whether photometry is measured on this record's stamps."""
    return record.product_kind is None and (record.product_type or "").upper() in SCIENCE_TYPES


def photometry_units(index: object, hits: Sequence[tuple[PhotometryTarget, ImageRecord]],
                     options: PhotometryOptions, zero_points: Mapping[str, float] = {},  # noqa: B006
                     ) -> list[PhotometryUnit]:
    """Group the science stamps of a job per image; find each image's RMS and FLAG."""
    grouped: dict[str, tuple[ImageRecord, list[PhotometryTarget]]] = {}
    for target, record in hits:
        if is_science(record):
            grouped.setdefault(record.obs_publisher_did, (record, []))[1].append(target)
    units = []
    for record, targets in grouped.values():
        siblings = [s for s in index.siblings(record)  # type: ignore[attr-defined]
                    if s.product_kind is None and s.shape == record.shape]
        rms = next((s for s in siblings if (s.product_type or "").upper() in RMS_TYPES), None)
        flag = next((s for s in siblings if (s.product_type or "").upper() in FLAG_TYPES), None)
        targets.sort(key=lambda t: t.row)
        for start in range(0, len(targets), TARGETS_PER_UNIT):
            units.append(PhotometryUnit(record, rms, flag,
                                        tuple(targets[start:start + TARGETS_PER_UNIT]),
                                        options, zero_points.get(record.band or "")))
    return units


def measure_unit(unit: PhotometryUnit) -> list[PhotometryRow]:
    """Measure every target of a unit (runs on a job worker; plain values in and out)."""
    try:
        return _measure(unit)
    except (OSError, ValueError) as exc:
        return [_row(unit, target, "error", f"photometry failed: {type(exc).__name__}: {exc}")
                for target in unit.targets]


def _measure(unit: PhotometryUnit) -> list[PhotometryRow]:
    options = unit.options
    with OpenImage(unit.science.path, unit.science.hdu) as image:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = image.wcs.celestial
            x, y = wcs.all_world2pix([t.ra for t in unit.targets],
                                     [t.dec for t in unit.targets], 0)
        scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0
        per_pixel = 1.0 if options.unit == "pix" else 1.0 / scale
        radii = tuple(r * per_pixel for r in options.radii)
        ring = (options.ring[0] * per_pixel, options.ring[1] * per_pixel)
        half = window_half(ring)
        zero_point = _zero_point(image.header, unit.zero_point)
        unit_text = str(image.header.get("BUNIT", "")).strip()
        values, outside, boxes = _windows(image, unit.targets, x, y, half)
    rms = flags = None
    if unit.rms is not None:
        with OpenImage(unit.rms.path, unit.rms.hdu) as image:
            rms = _read_same(image, boxes, values.shape)
    if unit.flag is not None:
        with OpenImage(unit.flag.path, unit.flag.hdu) as image:
            raw = _read_same(image, boxes, values.shape)
            flags = np.where(np.isfinite(raw), raw, 0).astype(np.int64)
    x0 = np.array([box[0] for box in boxes], dtype=float)
    y0 = np.array([box[1] for box in boxes], dtype=float)
    found = measure_windows(values, x - x0, y - y0, radii, ring, rms, flags, outside)
    rows = []
    for n, target in enumerate(unit.targets):
        if found.clipped[n]:
            (sx0, sx1), (sy0, sy1) = target.ranges[:2]
            rows.append(_row(unit, target, "clipped", (
                f"the aperture of radius {max(options.radii):g} {options.unit} "
                f"({max(radii):.1f} pix) reaches past the stamp (pixels [{sx0 + 1}:{sx1},"
                f"{sy0 + 1}:{sy1}] of the image): refused; ask for a larger SIZE, or the "
                "target is at the image edge"), zero_point, unit_text))
            continue
        flux = [float(v) for v in found.flux[n]]
        error = [float(v) for v in found.flux_err[n]]
        mag, mag_err = _magnitudes(flux, error, zero_point)
        rows.append(PhotometryRow(
            target.row, target.target_id, target.ra, target.dec,
            unit.science.obs_publisher_did, unit.science.band, "ok", _flag_text(
                int(found.flags[n])), flux, error, mag, mag_err, float(found.background[n]),
            int(found.flags[n]), int(found.flag_bits[n]), zero_point, unit_text,
            "rms" if rms is not None else "background"))
    return rows


def _row(unit: PhotometryUnit, target: PhotometryTarget, status: str, message: str,
         zero_point: float | None = None, unit_text: str = "") -> PhotometryRow:
    nan = [math.nan] * len(unit.options.radii)
    return PhotometryRow(target.row, target.target_id, target.ra, target.dec,
                         unit.science.obs_publisher_did, unit.science.band, status, message,
                         nan, nan, nan, nan, zero_point=zero_point, unit=unit_text)


def _flag_text(flags: int) -> str:
    return "; ".join(text for bit, text in FLAG_MEANINGS.items() if flags & bit)


def _zero_point(header, fallback: float | None) -> float | None:  # noqa: ANN001
    for key in ZERO_POINT_KEYWORDS:
        value = header.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
                float(value)):
            return float(value)
    return fallback


def _magnitudes(flux: list[float], error: list[float], zero_point: float | None
                ) -> tuple[list[float], list[float]]:
    if zero_point is None:
        return [math.nan] * len(flux), [math.nan] * len(flux)
    mags, errors = [], []
    for value, sigma in zip(flux, error, strict=True):
        if value > 0 and math.isfinite(value):
            mags.append(zero_point - 2.5 * math.log10(value))
            errors.append(MAG_ERR_FACTOR * sigma / value)
        else:
            mags.append(math.nan)
            errors.append(math.nan)
    return mags, errors


def _windows(image: OpenImage, targets: Sequence[PhotometryTarget], x: np.ndarray,
             y: np.ndarray, half: int
             ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int, int, int]]]:
    """Windows of 2 half + 1 pixels around each target: the stamp's pixels (physical
    values), NaN and ``outside`` beyond the stamp's box. Boxes: (wx0, wy0, rx0, rx1, ry0,
    ry1): the window's first pixel and the part read (image pixels)."""
    side = 2 * half + 1
    boxes = []
    for n, target in enumerate(targets):
        wx0 = round(float(x[n])) - half if math.isfinite(x[n]) else 0
        wy0 = round(float(y[n])) - half if math.isfinite(y[n]) else 0
        (sx0, sx1), (sy0, sy1) = target.ranges[:2]
        boxes.append((wx0, wy0, max(wx0, sx0), min(wx0 + side, sx1), max(wy0, sy0),
                      min(wy0 + side, sy1)))
    values = _read_same(image, boxes, (len(targets), side, side))
    outside = np.ones(values.shape, dtype=bool)
    for n, (wx0, wy0, rx0, rx1, ry0, ry1) in enumerate(boxes):
        if rx0 < rx1 and ry0 < ry1:
            outside[n, ry0 - wy0:ry1 - wy0, rx0 - wx0:rx1 - wx0] = False
    return values, outside, boxes


def _read_same(image: OpenImage, boxes: list[tuple[int, int, int, int, int, int]],
               shape: tuple[int, ...]) -> np.ndarray:
    """The windows' pixels from an image (the science one, or a sibling RMS or FLAG on
    the same grid), NaN where a window is off the stamp. A plain image is sliced from its
    memory map; a tile-compressed one has every tile decoded once for all windows."""
    values = np.full(shape, np.nan)
    wanted = [(n, _box(image, rx0, rx1, ry0, ry1))
              for n, (_, _, rx0, rx1, ry0, ry1) in enumerate(boxes) if rx0 < rx1 and ry0 < ry1]
    convert = _physical(image)
    if image.is_compressed and len(image.fits_shape) == 2:
        pieces = read_boxes(image, wanted)
    else:
        data = image.hdu.data  # raw values (opened without scaling), memory mapped
        pieces = ((n, data[box.slices()]) for n, box in wanted)
    for n, raw in pieces:
        wx0, wy0, rx0, rx1, ry0, ry1 = boxes[n]
        values[n, ry0 - wy0:ry1 - wy0, rx0 - wx0:rx1 - wx0] = convert(
            np.asarray(raw).reshape(ry1 - ry0, rx1 - rx0))
    return values


def _box(image: OpenImage, x0: int, x1: int, y0: int, y1: int) -> PixelBox:
    """A 2-D box (first plane of any further axes)."""
    extra = tuple((0, 1) for _ in image.fits_shape[2:])
    return PixelBox(((x0, x1), (y0, y1), *extra))


def _physical(image: OpenImage):  # noqa: ANN202 - a converter of raw pixel arrays
    """A function turning raw pixels into physical units: BLANK as NaN, BSCALE/BZERO
    applied (`OpenImage.read` gives raw pixels, tile-compressed images included)."""
    scaling = header_scaling(image.header)

    def convert(raw: np.ndarray) -> np.ndarray:
        return physical_values(raw, dtype=np.float64, **scaling)

    return convert


def manifest_fields(options: PhotometryOptions) -> list[tuple[str, str, str, str, str]]:
    """(name, datatype, unit, ucd, description) of the photometry columns a manifest gets."""
    fields = []
    for k, radius in enumerate(options.radii, start=1):
        what = f"aperture {k} (radius {radius:g} {options.unit})"
        fields += [
            (f"flux_ap{k}", "double", "", "phot.flux", f"background-subtracted flux in {what}, "
             "in the image's BUNIT (phot_unit)"),
            (f"flux_err_ap{k}", "double", "", "stat.error;phot.flux", f"error of flux_ap{k}"),
            (f"mag_ap{k}", "double", "mag", "phot.mag", f"magnitude in {what} from the zero "
             "point (phot_zero_point)"),
            (f"mag_err_ap{k}", "double", "mag", "stat.error;phot.mag", f"error of mag_ap{k}"),
        ]
    return fields + [
        ("phot_status", "char", "", "meta.code.status", "ok, clipped (aperture past the "
         "stamp: refused) or error"),
        ("phot_message", "char", "", "meta.note", "why not ok; measurement flags in words"),
        ("phot_background", "double", "", "phot.flux;instr.skyLevel", "background per pixel "
         "(sigma-clipped median of the annulus), subtracted"),
        ("phot_flags", "int", "", "meta.code", "1 aperture not on valid pixels, 2 few "
         "background pixels, 4 error from the background scatter (no RMS), 8 no measurement"),
        ("phot_flag_bits", "long", "", "meta.code.qual", "OR of the FLAG product's pixels in "
         "the largest aperture"),
        ("phot_zero_point", "double", "mag", "phot.mag;arith.zp", "zero point used"),
        ("phot_unit", "char", "", "meta.unit", "unit of the fluxes (the image's BUNIT)"),
    ]


def manifest_values(row: PhotometryRow) -> dict[str, object]:
    """One row's photometry columns by FIELD name."""
    values: dict[str, object] = {}
    for k, (flux, error, mag, mag_err) in enumerate(zip(row.flux, row.flux_err, row.mag,
                                                        row.mag_err, strict=True), start=1):
        values.update({f"flux_ap{k}": flux, f"flux_err_ap{k}": error, f"mag_ap{k}": mag,
                       f"mag_err_ap{k}": mag_err})
    values.update({"phot_status": row.status, "phot_message": row.message or None,
                   "phot_background": row.background, "phot_flags": row.flags,
                   "phot_flag_bits": row.flag_bits, "phot_zero_point": row.zero_point,
                   "phot_unit": row.unit or None})
    return values


def photometry_table_bytes(rows: Sequence[PhotometryRow], options: PhotometryOptions) -> bytes:
    """The photometry of a job as its own VOTable 1.4: one row per target x band."""
    from astropy.io.votable import from_table

    ordered = sorted(rows, key=lambda r: (r.row, r.band or "", r.image_id))
    table = Table()
    table["target_id"] = [r.target_id for r in ordered]
    table["row"] = np.array([r.row + 1 for r in ordered], dtype=np.int64)
    table["ra"] = [r.ra for r in ordered]
    table["dec"] = [r.dec for r in ordered]
    table["band"] = [r.band or "" for r in ordered]
    table["image_id"] = [r.image_id for r in ordered]
    for name, _, unit, ucd, description in manifest_fields(options):
        column = [manifest_values(r)[name] for r in ordered]
        if name in ("phot_status", "phot_message", "phot_unit"):
            table[name] = ["" if v is None else str(v) for v in column]
        elif name in ("phot_flags", "phot_flag_bits"):
            table[name] = np.array(column, dtype=np.int64)
        else:
            table[name] = np.array([math.nan if v is None else v for v in column], dtype=float)
        table[name].description = description
        if unit:
            table[name].unit = unit
        table[name].meta["ucd"] = ucd
    table["ra"].unit = table["dec"].unit = "deg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        votable = from_table(table)
    votable.version = "1.4"
    for votable_field in votable.get_first_table().fields:
        ucd = table[votable_field.name].meta.get("ucd") if votable_field.name in table.colnames \
            else None
        if ucd:
            votable_field.ucd = ucd
    buffer = io.BytesIO()
    votable.to_xml(buffer, tabledata_format="tabledata")
    return buffer.getvalue()
