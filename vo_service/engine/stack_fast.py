"""The quick way through many epoch files: read a plain image's header bytes directly, build
its WCS from wcslib's parser, and slice the stamp from a memory map.

A time series opens hundreds of files for one small stamp each; there astropy's
``fits.open`` and ``WCS(header)`` (about 5 ms per file, mostly Python bookkeeping around
wcslib) cost far more than the pixels. This path does the same work for the common case
and gives byte-identical stamps and the same target pixel (tested against
:mod:`vo_service.engine.cutout`), in about 0.4 ms of CPU per epoch:

- each header is read once (the epoch listing's scan is reused by the cut) and its plain
  card values are parsed here, not by astropy's ``Card``;
- wcslib parses the WCS cards only; epochs with identical WCS cards (a fixed sky grid)
  share one WCS per thread; the target's pixel comes from astropy's fixed-point SIP
  iteration run on the C calls directly (:class:`PointWCS`);
- the stamp is copied out of a plain ``mmap`` of the file.

It applies to:

- uncompressed, not gzipped files; an image HDU with NAXIS = 2 (primary or extension);
- a celestial WCS on axes 1 and 2 that wcslib reads alone, optionally with SIP (no
  lookup-table distortions, which need other HDUs);
- a centre + size request in pixels.

Anything else returns None and the caller takes the general path.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, Sip, WCSBase, Wcsprm

from vo_service.engine.cutout import CutoutResult, describe_region
from vo_service.engine.geometry import WORLD_TO_PIXEL_TOLERANCE, PixelBox
from vo_service.engine.writing import BLANK_FOR_BITPIX, BLOCK, StampHeader, dtype_bitpix
from vo_service.shapes import CenterSize

BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
LOOKUP_KEYS = ("CPDIS1", "CPDIS2", "D2IMDIS1", "D2IMDIS2", "CPERR1", "CPERR2")
MAX_HEADER_BLOCKS = 2000  # 72,000 cards: a sane header is far smaller
ROUND_TRIP_DEG = 1e-6  # a target that does not map back lies on the far side of the sky
# the cards wcslib needs for a 2-D celestial WCS (alternate WCSs too, they are harmless)
# and the SIP cards (group 2), which astropy reads and wcslib must not see
# (wcslib's legacy forms too: PC001002, CD001002, PROJPn)
WCS_CARD = re.compile(r"(?:(WCSAXES|NAXIS|CRPIX|CRVAL|CDELT|CROTA|CTYPE|CUNIT|CD\d+_\d|"
                      r"PC\d+_\d|(?:PC|CD)\d{6}|P[VS]\d+_\d|PROJP\d|LONPOLE|LATPOLE|"
                      r"RADESYS|RADECSYS|EQUINOX|EPOCH )|((?:A|B|AP|BP)_(?:ORDER|\d+_\d+)))"
                      r"[^=]*= ")
WCS_CACHE_SIZE = 16  # WCSs kept per thread, by their cards
_thread_wcs = threading.local()  # astropy WCS objects are not thread-safe


@dataclass(frozen=True)
class RawHDU:
    """An image HDU found by scanning header blocks: its header text and where data start."""

    index: int
    text: str
    data_offset: int
    values: dict[str, str]

    def number(self, key: str, default: float = 0.0) -> float:
        text = self.values.get(key)
        return default if text is None else float(text)

    @cached_property
    def header(self) -> RawHeader:
        """The header's cards (made once, shared by the epoch listing and the cut)."""
        return RawHeader(self.text)


class RawCard:
    """One 80-character card, parsed by astropy only when its value is asked for."""

    __slots__ = ("_card", "image", "keyword", "rawkeyword")

    def __init__(self, image: str) -> None:
        self.image = image
        self.rawkeyword = image[:8].rstrip()
        self.keyword = self.rawkeyword.upper()
        self._card: fits.Card | None = None

    def _parsed(self) -> fits.Card:
        if self._card is None:
            self._card = fits.Card.fromstring(self.image)
        return self._card

    @property
    def value(self) -> object:
        found = plain_value(self.image)
        return self._parsed().value if found is None else found

    @property
    def comment(self) -> str:
        return self._parsed().comment

    @property
    def field_specifier(self) -> str | None:
        return None  # record-valued (DPj) cards send a header to the general path


_INTEGER = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[EeDd][+-]?[0-9]+)?")
_STRING = re.compile(r" *'((?:[^']|'')*)'")


def plain_value(image: str) -> object | None:
    """The value of a card in its common fixed or free format (string, logical, integer,
    real), as astropy reads it; None for anything else (complex, undefined, odd text),
    which astropy's ``Card`` then parses. astropy's own parsing costs about 30 us a card,
    most of it configuration look-ups."""
    field = image[10:]
    if field.lstrip().startswith("'"):
        match = _STRING.match(field)
        if match is None or ":" in match.group(1):
            return None  # record-valued cards ('AXIS.1: 1') are astropy's to read
        return match.group(1).replace("''", "'").rstrip()
    text = field.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    if _INTEGER.fullmatch(text):
        return int(text)
    if _REAL.fullmatch(text):
        return float(text.replace("D", "E").replace("d", "e"))
    return None


class RawHeader:
    """The part of ``fits.Header`` that :class:`StampHeader` and the WCS set-up use, over
    card images as they are in the file: no per-card parsing or verification."""

    def __init__(self, text: str) -> None:
        cards = [RawCard(text[i:i + 80]) for i in range(0, len(text), 80)]
        end = next((i for i, c in enumerate(cards) if c.rawkeyword == "END"), len(cards))
        self.cards = cards[:end]
        valued = [c for c in self.cards if c.image[8:10] == "= "]
        self._by_key = {c.keyword: c for c in valued}
        # long strings (CONTINUE), HIERARCH and repeated keywords: astropy's reading and
        # fixing of these is what the general path is for
        self.plain = len(self._by_key) == len(valued) and all(
            c.image[8:10] == "= " or c.keyword in ("COMMENT", "HISTORY", "")
            for c in self.cards)

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def __getitem__(self, key: str) -> object:
        return self._by_key[key].value

    def get(self, key: str, default: object = None) -> object:
        found = self._by_key.get(key)
        return default if found is None else found.value


def _card_values(text: str) -> dict[str, str]:
    """Keyword -> raw value text of the cards the structure needs (no strings parsed)."""
    values: dict[str, str] = {}
    for start in range(0, len(text), 80):
        card = text[start:start + 80]
        if card[8:10] != "= ":
            continue
        key = card[:8].rstrip()
        value = card[10:]
        if value.lstrip().startswith("'"):
            values[key] = value.split("'")[1].strip() if value.count("'") >= 2 else ""
        else:
            values[key] = value.split("/")[0].strip()
    return values


def _data_bytes(values: dict[str, str]) -> int:
    naxis = int(values.get("NAXIS", "0"))
    if naxis == 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        count *= int(values.get(f"NAXIS{axis}", "0"))
    bits = abs(int(values.get("BITPIX", "8")))
    total = bits // 8 * int(values.get("GCOUNT", "1")) * (int(values.get("PCOUNT", "0"))
                                                           + count)
    return total + (-total % BLOCK)


def scan_hdu(path: Path, hdu: int | None = None) -> RawHDU | None:
    """The header of HDU ``hdu`` (None: the first with NAXIS = 2 and CTYPE1) by reading
    header blocks only; None for gzip files or anything unexpected."""
    if path.name.lower().endswith((".gz", ".fz")):
        return None
    return _scan(path, hdu)


def _scan(path: Path, hdu: int | None) -> RawHDU | None:
    try:
        with open(path, "rb") as stream:
            offset, index = 0, 0
            while index <= (hdu if hdu is not None else 64):
                stream.seek(offset)
                blocks = []
                for _ in range(MAX_HEADER_BLOCKS):
                    block = stream.read(BLOCK)
                    if len(block) < BLOCK:
                        return None
                    blocks.append(block)
                    if any(block[i:i + 8] == b"END     " for i in range(0, BLOCK, 80)):
                        break
                else:
                    return None
                text = b"".join(blocks).decode("ascii")
                values = _card_values(text)
                data_offset = offset + len(blocks) * BLOCK
                wanted = (index == hdu) if hdu is not None else (
                    values.get("NAXIS") == "2" and "CTYPE1" in values)
                if wanted:
                    return RawHDU(index, text, data_offset, values)
                offset = data_offset + _data_bytes(values)
                index += 1
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def _sip(header: RawHeader, crpix: np.ndarray) -> Sip | None:
    if "A_ORDER" not in header:
        return None

    def matrix(prefix: str, order: int) -> np.ndarray:
        values = np.zeros((order + 1, order + 1))
        for i in range(order + 1):
            for j in range(order + 1 - i):
                values[i, j] = float(header.get(f"{prefix}_{i}_{j}", 0.0))
        return values

    a = matrix("A", int(header["A_ORDER"]))
    b = matrix("B", int(header["B_ORDER"]))
    ap = matrix("AP", int(header["AP_ORDER"])) if "AP_ORDER" in header else None
    bp = matrix("BP", int(header["BP_ORDER"])) if "BP_ORDER" in header else None
    return Sip(a, b, ap, bp, crpix)


def quick_wcs(raw: RawHDU, header: RawHeader) -> PointWCS | None:
    """The WCS of a plain 2-D header from wcslib's own parser (plus SIP); None when the
    header needs more (lookup tables, other HDUs, no celestial axes).

    wcslib is given the WCS cards only: the rest of a header only costs parsing time,
    and wcslib would apply SIP cards itself, on top of astropy's ``Sip`` (astropy's
    ``WCS(header)`` removes them before wcslib sees the header, so must we). Epochs whose
    WCS and SIP cards are identical (a survey's fixed sky grid) share one WCS per thread.
    """
    if any(key in raw.values for key in LOOKUP_KEYS) or "A_DMAX" in raw.values:
        return None
    linear, sip = [], []
    for card in header.cards:
        if match := WCS_CARD.match(card.image):
            (sip if match.group(2) else linear).append(card.image)
    key = "".join(linear + sip)
    cache = _thread_wcs.__dict__.setdefault("cache", OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    wcs = _new_wcs(raw, header, "".join(linear))
    cache[key] = wcs
    if len(cache) > WCS_CACHE_SIZE:
        cache.popitem(last=False)
    return wcs


class PointWCS:
    """wcslib's ``Wcsprm`` and astropy's ``Sip`` of one image, for a point or two.

    ``WCS.all_world2pix`` of one position costs 20-45 us of Python wrapping around 5 us
    of wcslib and SIP; :meth:`world_to_pixel` runs astropy's fixed-point iteration on
    the same C calls (``Wcsprm.s2p``, ``WCSBase._pix2foc``), so gives the same numbers,
    and hands a diverging case to astropy's adaptive method.
    """

    TOLERANCE = WORLD_TO_PIXEL_TOLERANCE  # as SkyToPixel.pixels, so the same boxes
    MAX_ITERATIONS = 20  # astropy's default

    def __init__(self, wcsprm: Wcsprm, sip: Sip | None, shape: tuple[int, int]) -> None:
        self.wcsprm = wcsprm
        self.sip = sip
        self.base = WCSBase(sip, (None, None), wcsprm, (None, None))
        self.shape = shape
        self.lng_first = wcsprm.lng == 0

    def _world(self, ra: float, dec: float) -> np.ndarray:
        return np.array([[ra, dec]] if self.lng_first else [[dec, ra]])

    def world_to_pixel(self, ra: float, dec: float) -> tuple[float, float]:
        """0-based pixel (x, y) of an ICRS position, as ``all_world2pix(..., quiet=True,
        tolerance=TOLERANCE)``."""
        world = self._world(ra, dec)
        with np.errstate(invalid="ignore", over="ignore"):
            pix0 = self.wcsprm.s2p(world, 0)["pixcrd"]
            if self.sip is None:
                return float(pix0[0, 0]), float(pix0[0, 1])
            pix = pix0.copy()
            dpix = self.base._pix2foc(pix, 0) - pix0
            pix -= dpix
            dn = dnprev = float(np.sum(dpix * dpix))
            tol2 = self.TOLERANCE ** 2
            k = 1
            while dn >= tol2 and k < self.MAX_ITERATIONS:
                dpix = self.base._pix2foc(pix, 0) - pix0
                dn = float(np.sum(dpix * dpix))
                if dn >= dnprev and dn >= tol2:
                    return self._astropy_world_to_pixel(world)  # diverging: adaptive
                dnprev = dn
                pix -= dpix
                k += 1
        return float(pix[0, 0]), float(pix[0, 1])

    def _astropy_world_to_pixel(self, world: np.ndarray) -> tuple[float, float]:
        wcs = WCS(naxis=2)
        wcs.wcs = self.wcsprm
        wcs.sip = self.sip
        pixel = wcs.all_world2pix(world, 0, quiet=True, tolerance=self.TOLERANCE)[0]
        return float(pixel[0]), float(pixel[1])

    def pixel_to_world(self, x: float, y: float) -> tuple[float, float]:
        """ICRS (ra, dec) of a 0-based pixel, as ``all_pix2world``."""
        world = self.base._all_pix2world(np.array([[x, y]]), 0)[0]
        return (float(world[0]), float(world[1])) if self.lng_first else (
            float(world[1]), float(world[0]))


def _new_wcs(raw: RawHDU, header: RawHeader, linear: str) -> PointWCS | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = Wcsprm(linear.encode("ascii"), relax=True)
            parsed.set()
            sip = _sip(header, parsed.crpix)
        except Exception:  # noqa: BLE001 - any oddity: the general path decides
            return None
    if parsed.naxis != 2 or sorted((parsed.lng, parsed.lat)) != [0, 1]:
        return None
    if "-SIP" in "".join(parsed.ctype) and sip is None:
        return None
    return PointWCS(parsed, sip, (int(raw.values["NAXIS1"]), int(raw.values["NAXIS2"])))


def quick_cut(path: Path, hdu: int, region: CenterSize, *, pad: bool = False,
              origfile: str | None = None, raw: RawHDU | None = None
              ) -> tuple[CutoutResult, tuple[float, float]] | None:
    """(result, target pixel 0-based) of one centre+size region in pixels, as
    ``iter_cutouts`` makes it; None when this path does not apply. ``raw``: the HDU's
    header as :func:`scan_hdu` already read it (not read again)."""
    if region.unit != "pix":
        return None
    if raw is None or raw.index != hdu:
        raw = scan_hdu(path, hdu)
    if raw is None or raw.values.get("NAXIS") != "2" or "ZIMAGE" in raw.values:
        return None
    if raw.values.get("XTENSION", "IMAGE") != "IMAGE" and raw.index > 0:
        return None
    if any(key in raw.values for key in ("DP1", "DP2", "DQ1", "DQ2")):
        return None  # record-valued distortion cards: the general path parses them
    if not _is_icrs(raw.values):
        return None  # other frames are converted by SkyToPixel on the general path
    header = raw.header
    if not header.plain:
        return None
    wcs = quick_wcs(raw, header)
    if wcs is None:
        return None
    nx, ny = int(raw.values["NAXIS1"]), int(raw.values["NAXIS2"])
    cx, cy = wcs.world_to_pixel(region.ra, region.dec)
    result = _result(region, cx, cy, nx, ny, wcs, raw, header, pad, origfile or path.name,
                     path)
    return result, (cx, cy)


def _is_icrs(values: dict[str, str]) -> bool:
    """Whether the celestial frame is ICRS (RADESYS, or the FITS default without one)."""
    if not (values.get("CTYPE1", "").startswith(("RA--", "DEC-"))
            and values.get("CTYPE2", "").startswith(("RA--", "DEC-"))):
        return False
    radesys = values.get("RADESYS", values.get("RADECSYS", "")).upper()
    return radesys == "ICRS" or (radesys == "" and "EQUINOX" not in values
                                 and "EPOCH" not in values)


def _maps_back(wcs: PointWCS, cx: float, cy: float, region: CenterSize) -> bool:
    ra, dec = wcs.pixel_to_world(cx, cy)
    return abs(dec - region.dec) < ROUND_TRIP_DEG and abs(
        ((ra - region.ra + 180.0) % 360.0 - 180.0) * math.cos(math.radians(region.dec))
    ) < ROUND_TRIP_DEG


def _read_box(path: Path, offset: int, dtype: np.dtype, shape: tuple[int, int],
              box: PixelBox) -> np.ndarray:
    """A copy of the box's pixels, through a plain memory map of the file (numpy's
    ``memmap`` costs about 0.1 ms of Python set-up per file)."""
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if offset + shape[0] * shape[1] * dtype.itemsize > size:
            raise OSError(f"{path.name} is shorter than its header says (truncated)")
        mapping = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        array = np.ndarray(shape, dtype, buffer=mapping, offset=offset)
        pixels = array[box.slices()].copy()
        del array
    finally:
        mapping.close()
    return pixels


def _result(region: CenterSize, cx: float, cy: float, nx: int, ny: int, wcs: PointWCS,
            raw: RawHDU, header: RawHeader, pad: bool, origfile: str,
            path: Path) -> CutoutResult:
    from vo_service.engine.cutout import SPATIAL_MISS

    if not (math.isfinite(cx) and math.isfinite(cy)) or not _maps_back(wcs, cx, cy, region):
        return CutoutResult("no-overlap", None, SPATIAL_MISS, reason="spatial")
    width = max(int(np.round(region.width)), 1)
    height = max(int(np.round(region.height)), 1)
    left = int(np.ceil(cx - width / 2.0))  # the rounding of astropy overlap_slices
    bottom = int(np.ceil(cy - height / 2.0))
    requested = PixelBox(((left, left + width), (bottom, bottom + height)))
    inside = requested.clip((nx, ny))
    if inside is None:
        return CutoutResult("no-overlap", None, SPATIAL_MISS, reason="spatial")
    status = "ok" if inside == requested else "partial"
    dtype = np.dtype(BITPIX_DTYPE[int(raw.values["BITPIX"])])
    pixels = _read_box(path, raw.data_offset, dtype, (ny, nx), inside)
    box, blank = inside, None
    if pad and inside != requested:
        box = requested
        if dtype.kind == "f":
            fill: float | int = math.nan
        else:
            blank = int(header.get("BLANK", BLANK_FOR_BITPIX[dtype_bitpix(dtype)]))
            fill = blank
        stamp = np.full(requested.shape, fill, dtype=dtype)
        stamp[inside.y0 - requested.y0:inside.y1 - requested.y0,
              inside.x0 - requested.x0:inside.x1 - requested.x0] = pixels
        pixels = stamp
    template = StampHeader(header, origfile=origfile, orig_ext=raw.index,  # type: ignore[arg-type]
                           data_bitpix=dtype_bitpix(pixels.dtype))
    return CutoutResult(status, box, "", pixels, index=0, request=describe_region(region),
                        shape_name="CENTERSIZE", template=template, blank=blank)
