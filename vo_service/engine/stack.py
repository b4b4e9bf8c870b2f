"""Time series of one target: one exact stamp per epoch, in time order, as one FITS file.

Pure array and FITS work (no index, no HTTP): the caller says which image HDUs are the
epochs and where on the sky each stamp is centred (a fixed target, or the position of a
moving one at each exposure's mid-time). Nothing is resampled here: every stamp is a copy
of its source pixels with the source WCS shifted, as every cutout of this service
(:mod:`vo_service.engine.cutout`). The aligned cube is :mod:`vo_service.engine.stack_cube`.

The multi-extension file (:func:`stack_chunks`): an empty primary HDU describing the
series, one image extension ``EPOCH<n>`` per epoch with a stamp (n counts all epochs in
time order, so a gap in the numbers is an epoch without a stamp), then a BINTABLE
``EPOCHS`` with one row per epoch, stamp or not: times, exposure, image ID, pixel box,
predicted target pixel, status and message.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from vo_service.engine.batch import run_tasks
from vo_service.engine.cutout import CutoutResult
from vo_service.engine.reading import OpenImage
from vo_service.engine.spectral import CutoutError, observation_interval
from vo_service.engine.writing import BLOCK, card, empty_primary_bytes
from vo_service.shapes import CenterSize

# Status of an epoch: the cutout statuses plus 'empty' (the stamp holds no finite pixel).
EPOCH_STATUSES = ("ok", "partial", "empty", "no-overlap", "error")


@dataclass(frozen=True)
class Epoch:
    """One image of a series: where its pixels are, when it was taken, where to centre.

    Times are MJD (UTC); ``ra``/``dec`` (ICRS degrees) is the stamp centre for this epoch.
    ``kind`` tells stamps of one epoch apart when a moving target is cut with a fixed
    position as well (``path`` and ``fixed``).
    """

    path: Path
    hdu: int
    image_id: str
    ra: float
    dec: float
    t_start: float | None = None
    t_end: float | None = None
    exptime: float | None = None
    kind: str = "target"
    # the header as the listing read it (stack_fast.RawHDU): the cut does not read it again
    scan: object = field(default=None, compare=False, repr=False)

    @property
    def t_mid(self) -> float | None:
        """Mid-exposure time (MJD), None when the start is unknown."""
        if self.t_start is None:
            return None
        return self.t_start if self.t_end is None else (self.t_start + self.t_end) / 2.0


@dataclass(eq=False)
class EpochStamp:
    """One epoch's stamp (or why there is none) and where the target falls on it."""

    epoch: Epoch
    number: int  # 1-based position in time order
    status: str
    message: str = ""
    result: CutoutResult | None = None
    target_pixel: tuple[float, float] | None = None  # 1-based FITS (x, y) in the stamp
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def has_stamp(self) -> bool:
        return self.result is not None and self.result.has_stamp

    @property
    def extname(self) -> str:
        prefix = "FIXED" if self.epoch.kind == "fixed" else "EPOCH"
        return f"{prefix}{self.number}"

    @property
    def pixel_box(self) -> tuple[int, int, int, int] | None:
        """(CUTX0, CUTX1, CUTY0, CUTY1): 1-based inclusive source pixels, as in the header."""
        if self.result is None or self.result.pixel_box is None:
            return None
        box = self.result.pixel_box
        return box.x0 + 1, box.x1, box.y0 + 1, box.y1


def epochs_from_files(paths: Sequence[str | Path], ra: float, dec: float,
                      hdus: Sequence[int | None] | None = None) -> list[Epoch]:
    """Epochs of local files, their times read from each header (MJD-OBS/DATE-OBS,
    MJD-END/EXPTIME); the image ID is the file name with the HDU. Without ``hdus`` each
    file's first image HDU with a celestial WCS is used."""
    from vo_service.engine.stack_fast import scan_hdu

    epochs = []
    for number, path in enumerate(paths):
        path = Path(path)
        wanted = None if hdus is None else hdus[number]
        raw = scan_hdu(path, wanted)
        if raw is not None:
            hdu, header = raw.index, raw.header
        else:  # gzip, or a layout the quick scan does not follow
            from vo_service.engine.api import first_image_hdu

            hdu = first_image_hdu(path) if wanted is None else int(wanted)
            header = fits.getheader(path, hdu)
        interval = observation_interval(header)
        exptime = header.get("EXPTIME", header.get("XPOSURE"))
        epochs.append(Epoch(path, hdu, f"{path.name}[{hdu}]", ra, dec,
                            interval[0] if interval else None,
                            interval[1] if interval else None,
                            float(exptime) if exptime is not None else None, scan=raw))
    return epochs


def time_order(epochs: Sequence[Epoch]) -> list[Epoch]:
    """Epochs sorted by mid-time (unknown times last, then by image ID): a stable order."""
    return sorted(epochs, key=lambda e: (e.t_mid is None, e.t_mid or 0.0, e.image_id, e.kind))


def _cut_one(task: tuple[int, Epoch, float, float, str, bool]) -> EpochStamp:
    from vo_service.engine.batch import iter_cutouts
    from vo_service.engine.stack_fast import quick_cut

    number, epoch, width, height, unit, pad = task
    region = CenterSize(epoch.ra % 360.0, epoch.dec, width, height, unit)
    try:
        quick = quick_cut(epoch.path, epoch.hdu, region, pad=pad, origfile=epoch.path.name,
                          raw=epoch.scan)  # type: ignore[arg-type]
        if quick is not None:
            result, (x, y) = quick
        else:
            with OpenImage(epoch.path, epoch.hdu) as image:
                (result,) = iter_cutouts(image, [region], pad=pad, origfile=epoch.path.name)
                xs, ys = image.sky_to_pixel.pixels(np.array([region.ra]),
                                                   np.array([region.dec]))
                x, y = float(xs[0]), float(ys[0])
    except (CutoutError, OSError, ValueError) as exc:
        return EpochStamp(epoch, number, "error", str(exc).splitlines()[0])
    if not result.has_stamp:
        return EpochStamp(epoch, number, "no-overlap",
                          result.message or "the target is off the image", result)
    box = result.pixel_box
    assert box is not None
    target = (x - box.x0 + 1.0, y - box.y0 + 1.0)
    status = result.status
    if _is_empty(result):
        status = "empty"
    message = {"partial": "the stamp is cut by the image edge",
               "empty": "no valid pixel in the stamp (NaN or BLANK)"}.get(status, "")
    return EpochStamp(epoch, number, status, message, result, target)


def _is_empty(result: CutoutResult) -> bool:
    """Whether a stamp holds no usable pixel: all NaN (floats) or all BLANK (integers)."""
    values = result.physical()
    return values is None or not np.isfinite(values).any()


def cut_epochs(epochs: Sequence[Epoch], width: float, height: float | None = None,
               unit: str = "pix", *, pad: bool = False, workers: int = 1
               ) -> list[EpochStamp]:
    """One stamp per epoch, centred on each epoch's (ra, dec), in time order.

    Every epoch gets an EpochStamp: 'ok', 'partial' (cut by the image edge; padded to the
    full size with NaN/BLANK when ``pad``), 'empty' (no finite pixel), 'no-overlap' (the
    box misses the image) or 'error' (the file cannot be read), with a message.
    """
    numbers: dict[str, int] = {}  # one number per image: its path and fixed stamps share it
    tasks = []
    for epoch in time_order(epochs):
        number = numbers.setdefault(epoch.image_id, len(numbers) + 1)
        tasks.append((number, epoch, float(width), float(height or width), unit, pad))
    done = dict(run_tasks(tasks, _cut_one, workers=workers))
    return [done[i] for i in range(len(tasks))]  # type: ignore[misc]


# ---- the multi-extension file -----------------------------------------------------------

def _mjd_card_values(epoch: Epoch, date_obs: str | None = None
                     ) -> list[tuple[str, object, str]]:
    cards: list[tuple[str, object, str]] = [("EPOCHKND", epoch.kind, "stamp centred on")]
    if epoch.t_start is not None:
        cards.append(("MJD-OBS", epoch.t_start, "[d] start of the exposure (UTC)"))
        if date_obs is None:
            date_obs = Time(epoch.t_start, format="mjd", scale="utc").isot
        cards.append(("DATE-OBS", date_obs, "start of the exposure (UTC)"))
    if epoch.t_end is not None:
        cards.append(("MJD-END", epoch.t_end, "[d] end of the exposure (UTC)"))
    if epoch.t_mid is not None:
        cards.append(("MJD-MID", epoch.t_mid, "[d] mid-exposure time (UTC)"))
    if epoch.exptime is not None:
        cards.append(("EXPTIME", epoch.exptime, "[s] exposure time"))
    return cards


def _cards(key: str, value: object, comment: str) -> str:
    """Card images of one keyword: one card, or CONTINUE cards for a long string."""
    if isinstance(value, str) and len(value) > 60:
        return fits.Card(key, value, comment if len(value) < 52 else "").image
    return card(key, value, comment)


def stamp_hdu_bytes(stamp: EpochStamp, extver_offset: int = 0,
                    date_obs: str | None = None) -> bytes:
    """One image extension: the exact stamp, its source WCS shifted, plus the epoch's
    times (DATE-OBS, MJD-OBS, MJD-MID, EXPTIME) and the target's position on it.
    ``date_obs``: the ISO start time when the caller has it (else computed here).

    The epoch cards follow the source's own (and replace same-named ones), rendered as
    card images: no astropy Header per stamp."""
    assert stamp.result is not None
    result = stamp.result
    parts = result.chunks(primary=False, extver_offset=extver_offset, extname=stamp.extname)
    head = bytes(parts[0]).decode("ascii")
    extra: list[tuple[str, object, str]] = [
        ("EPOCH", stamp.number, "epoch number in time order (1 = first)"),
        ("IMAGE_ID", stamp.epoch.image_id, "source image"),
        *_mjd_card_values(stamp.epoch, date_obs),
        ("TGT_RA", stamp.epoch.ra, "[deg] ICRS RA the stamp is centred on"),
        ("TGT_DEC", stamp.epoch.dec, "[deg] ICRS Dec the stamp is centred on")]
    if stamp.target_pixel is not None:
        extra += [("TGT_X", round(stamp.target_pixel[0], 4), "target x in this stamp (1-based)"),
                  ("TGT_Y", round(stamp.target_pixel[1], 4), "target y in this stamp (1-based)")]
    extra += [(key, value, comment) for key, (value, comment)  # type: ignore[misc]
              in stamp.extras.items()]
    replaced = {key for key, _, _ in extra}
    cards = [head[i:i + 80] for i in range(0, len(head), 80)]
    end = next(i for i, text in enumerate(cards) if text.startswith("END     "))
    kept = [text for text in cards[:end]
            if text[:8].rstrip() not in replaced or text[8:10] != "= "]
    text = "".join(kept) + "".join(_cards(*item) for item in extra) + f"{'END':<80}"
    text += " " * (-len(text) % BLOCK)
    return text.encode("ascii") + b"".join(bytes(p) for p in parts[1:])


EPOCH_COLUMNS = (
    # (name, FITS format, unit, description)
    ("epoch", "J", "", "epoch number in time order"),
    ("kind", "8A", "", "'target', 'path' (moving target) or 'fixed'"),
    ("extname", "10A", "", "image extension of the stamp (blank: none)"),
    ("t_start", "D", "d", "start of the exposure (MJD, UTC)"),
    ("t_mid", "D", "d", "mid-exposure time (MJD, UTC)"),
    ("t_end", "D", "d", "end of the exposure (MJD, UTC)"),
    ("exptime", "D", "s", "exposure time"),
    ("ra", "D", "deg", "stamp centre (ICRS)"),
    ("dec", "D", "deg", "stamp centre (ICRS)"),
    ("target_x", "D", "pix", "target x in the stamp (1-based)"),
    ("target_y", "D", "pix", "target y in the stamp (1-based)"),
    ("cutx0", "J", "pix", "first source pixel, axis 1 (1-based)"),
    ("cutx1", "J", "pix", "last source pixel, axis 1"),
    ("cuty0", "J", "pix", "first source pixel, axis 2 (1-based)"),
    ("cuty1", "J", "pix", "last source pixel, axis 2"),
    ("status", "10A", "", "ok, partial, empty, no-overlap or error"),
    ("image_id", "", "", "publisher DID (or file) of the source image"),
    ("message", "", "", "why an epoch has no (full) stamp"),
)


def epoch_rows(stamps: Sequence[EpochStamp]) -> list[dict[str, object]]:
    """One dict per epoch (FIELD names of EPOCH_COLUMNS): the table of the series."""
    rows = []
    for stamp in stamps:
        epoch, box = stamp.epoch, stamp.pixel_box
        rows.append({
            "epoch": stamp.number, "kind": epoch.kind,
            "extname": stamp.extname if stamp.has_stamp else "",
            "t_start": epoch.t_start, "t_mid": epoch.t_mid, "t_end": epoch.t_end,
            "exptime": epoch.exptime, "ra": epoch.ra, "dec": epoch.dec,
            "target_x": stamp.target_pixel[0] if stamp.target_pixel else None,
            "target_y": stamp.target_pixel[1] if stamp.target_pixel else None,
            "cutx0": box[0] if box else None, "cutx1": box[1] if box else None,
            "cuty0": box[2] if box else None, "cuty1": box[3] if box else None,
            "status": stamp.status, "image_id": epoch.image_id, "message": stamp.message,
        })
    return rows


def epochs_table_hdu(stamps: Sequence[EpochStamp]) -> fits.BinTableHDU:
    """The BINTABLE ``EPOCHS``: one row per epoch, stamp or not (NaN / -1 when unknown)."""
    rows = epoch_rows(stamps)
    columns = []
    for name, fmt, unit, _ in EPOCH_COLUMNS:
        values = [row[name] for row in rows]
        if fmt == "D":
            array = np.array([math.nan if v is None else float(v) for v in values])
        elif fmt == "J":
            array = np.array([-1 if v is None else int(v) for v in values], dtype=np.int32)
        else:
            texts = [str(v or "") for v in values]
            fmt = fmt or f"{max([1, *map(len, texts)])}A"
            array = np.array(texts)
        columns.append(fits.Column(name=name.upper(), format=fmt, unit=unit or None,
                                   array=array))
    table = fits.BinTableHDU.from_columns(columns, name="EPOCHS")
    for number, (_, _, _, text) in enumerate(EPOCH_COLUMNS, start=1):
        table.header[f"TTYPE{number}"] = (table.header[f"TTYPE{number}"], text[:47])
    return table


def stack_chunks(stamps: Sequence[EpochStamp], description: Sequence[tuple[str, object, str]]
                 ) -> Iterator[bytes]:
    """The series as one FITS file, chunk by chunk: primary (``description`` cards plus
    counts), one ``EPOCH<n>`` extension per stamp in time order, the ``EPOCHS`` table."""
    with_stamp = [s for s in stamps if s.has_stamp]
    cards = [card(key, value, comment) for key, value, comment in description]
    cards.append(card("NEPOCHS", len({(s.number) for s in stamps}), "epochs considered"))
    cards.append(card("NSTAMPS", len(with_stamp), "image extensions (stamps)"))
    cards.append(card("RESAMPLD", False, "stamps are exact copies of source pixels"))
    yield empty_primary_bytes(cards)
    dates = _iso_times([s.epoch.t_start for s in with_stamp])
    offset = 0
    for stamp, date_obs in zip(with_stamp, dates, strict=True):
        yield stamp_hdu_bytes(stamp, offset, date_obs)
        if stamp.result is not None and stamp.result.lookup_hdus:
            offset += max(int(h.header.get("EXTVER", 1)) for h in stamp.result.lookup_hdus)
    yield extension_bytes(epochs_table_hdu(stamps))


def _iso_times(mjds: Sequence[float | None]) -> list[str | None]:
    """ISO UTC times of MJDs in one astropy Time (one per epoch costs 0.2 ms each)."""
    known = [m for m in mjds if m is not None]
    texts = iter(Time(known, format="mjd", scale="utc").isot if known else ())
    return [None if m is None else str(next(texts)) for m in mjds]


def extension_bytes(hdu: fits.BinTableHDU | fits.ImageHDU) -> bytes:
    """An extension HDU's bytes as astropy writes them (after a one-block primary)."""
    stream = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(stream)
    return stream.getvalue()[BLOCK:]


def stack_bytes(stamps: Sequence[EpochStamp],
                description: Sequence[tuple[str, object, str]] = ()) -> bytes:
    """:func:`stack_chunks` joined (a series of a few hundred stamps fits in memory)."""
    content = b"".join(stack_chunks(stamps, description))
    assert len(content) % BLOCK == 0
    return content
