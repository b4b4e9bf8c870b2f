"""Cutout headers and FITS bytes, fast: one header template per image, bytes per stamp.

The science header of the source (structural keys dropped, everything else kept) is
rendered to card images once. Per stamp only a few cards change: NAXISn, CRPIXn (all
alternate WCSs), DSS CNPIX1/2, IRAF LTV1/2, the CUT* pixel box and the request. Each
stamp is then header bytes + big-endian pixel bytes + padding: valid FITS without any
per-stamp astropy Header or WCS construction.

Header cards written (1-based, inclusive pixel box in the source image):
CUTX0/CUTX1, CUTY0/CUTY1 (axes 1, 2), CUTZ0/CUTZ1, CUTW0/CUTW1 (axes 3, 4 of cubes);
ORIGFILE and ORIG_FLE (source file, whole: a long name continues on CONTINUE cards),
ORIG_EXT (source HDU index), CUTSHAPE, and HISTORY cards with the request.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

BLOCK = 2880
STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "GROUPS",
    "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZCMPTYPE", "ZQUANTIZ",
    "ZDITHER0", "ZTENSION", "ZPCOUNT", "ZGCOUNT", "ZSIMPLE", "ZEXTEND", "ZBLOCKED",
    "ZHECKSUM", "ZDATASUM", "TFIELDS", "THEAP", "END", "INHERIT",
}
STRUCTURAL_PATTERN = re.compile(r"^(NAXIS\d+|ZNAXIS\d+|ZTILE\d+|ZNAME\d+|ZVAL\d+|T[A-Z]+\d+)$")
CRPIX_PATTERN = re.compile(r"^CRPIX(\d)([A-Z]?)$")
LTV_PATTERN = re.compile(r"^LTV(\d)$")
LOOKUP_RECORD_PATTERN = re.compile(r"^(DP|DQ|D2IM)\d$")  # record cards naming an EXTVER
# every keyword the four patterns above can match starts so: the others skip them
PATTERN_PREFIX = re.compile(r"(Z?NAXIS|ZTILE|ZNAME|ZVAL|T[A-Z]+|CRPIX|LTV|DP|DQ|D2IM)\d")
CUT_NAMES = ("X", "Y", "Z", "W")
DTYPE_BITPIX = {"u1": 8, "i2": 16, "i4": 32, "i8": 64, "f4": -32, "f8": -64}
BLANK_FOR_BITPIX = {8: 255, 16: -32768, 32: -2147483648, 64: -9223372036854775808}


def format_value(value: object) -> str:
    """A FITS fixed-format value field (right-justified to column 30)."""
    if isinstance(value, bool | np.bool_):
        return f"{'T' if value else 'F':>20}"
    if isinstance(value, int | np.integer):
        return f"{int(value):>20d}"
    if isinstance(value, float | np.floating):
        text = repr(float(value)).upper()
        if "E" in text and "." not in text:
            text = text.replace("E", ".0E")
        elif "E" not in text and "." not in text:
            text += ".0"
        if len(text) > 20:
            text = f"{float(value):.15G}"
        return f"{text:>20}"
    quoted = "'" + f"{str(value).replace(chr(39), chr(39) * 2):<8}" + "'"
    return f"{quoted:<20}"


def card(key: str, value: object, comment: str = "") -> str:
    """One card image: 80 characters, or a multiple of 80 for a string too long for one
    card (FITS long-string convention, CONTINUE cards, as astropy writes it). A comment
    that does not fit is cut; a value never is."""
    text = f"{key:<8}= {format_value(value)}"
    if len(text) > 80 and isinstance(value, str):
        return long_string_card(key, value, comment)
    if comment:
        text += f" / {comment}"
    return f"{text[:80]:<80}"


def long_string_card(key: str, value: str, comment: str = "") -> str:
    """A string card continued over CONTINUE cards, rendered by astropy's `Card` (used
    once per header template, so its cost does not reach the per-stamp path). Characters
    FITS does not allow become '?', as in every other card this module writes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        return fits.Card(key, _printable(value), _printable(comment)).image


def _printable(text: str) -> str:
    return "".join(char if " " <= char <= "~" else "?" for char in text)


def history_cards(text: str) -> str:
    """HISTORY cards holding `text`, 72 characters per card."""
    chunks = [text[i:i + 72] for i in range(0, len(text), 72)] or [""]
    return "".join(f"HISTORY {chunk:<72}" for chunk in chunks)


def dtype_bitpix(dtype: np.dtype) -> int:
    return DTYPE_BITPIX[f"{dtype.kind}{dtype.itemsize}"]


class StampHeader:
    """Header template of one source image HDU; renders a stamp header in microseconds.

    Holds only strings and numbers, so it pickles cheaply to worker processes.
    """

    def __init__(self, header: fits.Header, *, origfile: str, orig_ext: int,
                 data_bitpix: int | None = None) -> None:
        source_bitpix = int(header.get("BITPIX", -32))
        self.bitpix = data_bitpix if data_bitpix is not None else source_bitpix
        # pixels decoded to floats (quantized compressed data) are no longer scaled ints
        drop_scaling = self.bitpix < 0 and source_bitpix > 0
        self.has_blank = "BLANK" in header and self.bitpix > 0 and not drop_scaling
        self.bscale = 1.0 if drop_scaling else float(header.get("BSCALE", 1.0))
        self.bzero = 0.0 if drop_scaling else float(header.get("BZERO", 0.0))
        self.source_blank = int(header["BLANK"]) if self.has_blank else None
        self.crpix: list[tuple[str, int, float]] = []
        self.ltv: list[tuple[str, int, float, float]] = []
        self.cnpix: list[tuple[str, int, float]] = []
        self.lookup_records: list[tuple[str, int, str]] = []
        self.names: dict[str, object] = {}
        self._prefixes: dict[tuple, str] = {}
        body: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for entry in header.cards:
                key = entry.keyword
                patterned = PATTERN_PREFIX.match(key) is not None
                if key in STRUCTURAL or patterned and STRUCTURAL_PATTERN.match(key):
                    continue
                if key in ("BSCALE", "BZERO", "BLANK") and (drop_scaling or self.bitpix < 0
                                                             and key == "BLANK"):
                    continue
                if patterned and (match := CRPIX_PATTERN.match(key)):
                    self.crpix.append((key, int(match.group(1)) - 1, float(entry.value)))
                    continue
                if patterned and (match := LTV_PATTERN.match(key)):
                    axis = int(match.group(1))
                    scale = float(header.get(f"LTM{axis}_{axis}", 1.0))
                    self.ltv.append((key, axis - 1, float(entry.value), scale))
                    continue
                if key in ("CNPIX1", "CNPIX2"):
                    self.cnpix.append((key, int(key[-1]) - 1, float(entry.value)))
                    continue
                if patterned and (record := _lookup_extver(entry)) is not None:
                    self.lookup_records.append(record)
                    continue
                if key in ("EXTNAME", "EXTVER"):
                    self.names[key] = entry.value
                    continue
                body.append(entry.image)
        present = {key for key, _, _ in self.crpix}
        naxis = int(header.get("NAXIS", 0))
        for axis in range(1, naxis + 1):  # CRPIX defaults to 0: still shift it
            if f"CTYPE{axis}" in header and f"CRPIX{axis}" not in present:
                self.crpix.append((f"CRPIX{axis}", axis - 1, 0.0))
        body.append(card("ORIGFILE", origfile, "source file of the cutout"))
        body.append(card("ORIG_FLE", origfile, "source file (astrocut name)"))
        body.append(card("ORIG_EXT", int(orig_ext), "source HDU index (0 = primary)"))
        self.body = "".join(body)

    def render(self, ranges: tuple[tuple[int, int], ...], *, primary: bool = True,
               request: str = "", shape_name: str = "", blank: int | None = None,
               extver_offset: int = 0, extname: str | None = None) -> bytes:
        """Header bytes (padded, with END) of a stamp covering `ranges` (0-based, half-open,
        FITS axis order, may extend past the image when padded)."""
        lengths = tuple(stop - start for start, stop in ranges)
        key = (primary, lengths, extname)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = self._prefix(primary, lengths, extname)
        head = [prefix]
        for name, axis, value in self.crpix:
            start = ranges[axis][0] if axis < len(ranges) else 0
            head.append(_number_card(name, value - start))
        for name, axis, value, scale in self.ltv:
            head.append(_number_card(name, value - scale * ranges[axis][0]))
        for name, axis, value in self.cnpix:
            head.append(_number_card(name, value + ranges[axis][0]))
        for name, version, comment in self.lookup_records:
            version += extver_offset
            head.append(f"{name:<8}= 'EXTVER: {version}' / {comment}"[:80].ljust(80))
        if blank is not None and not self.has_blank:
            head.append(card("BLANK", int(blank), "value of padding pixels"))
        for axis, (start, stop) in enumerate(ranges[:4]):
            head.append(_CUT_FORMATS[axis].format(start + 1, stop))
        if shape_name:
            head.append(card("CUTSHAPE", shape_name, "requested region type"))
        if request:
            head.append(history_cards(f"vo-service cutout: {request}"))
        head.append(_END_CARD)
        text = "".join(head)
        text += " " * (-len(text) % BLOCK)
        return text.encode("ascii", errors="replace")

    def _prefix(self, primary: bool, lengths: tuple[int, ...], extname: str | None) -> str:
        head = [card("SIMPLE", True) if primary else card("XTENSION", "IMAGE")]
        head.append(card("BITPIX", self.bitpix))
        head.append(card("NAXIS", len(lengths)))
        head.extend(card(f"NAXIS{i}", n) for i, n in enumerate(lengths, start=1))
        head.append(card("EXTEND", True) if primary else card("PCOUNT", 0) + card("GCOUNT", 1))
        if extname is not None:
            head.append(card("EXTNAME", extname))
        else:
            head.extend(card(key, value) for key, value in self.names.items())
        head.append(self.body)
        return "".join(head)


def _lookup_extver(entry: fits.Card) -> tuple[str, int, str] | None:
    """(DPj|DQj|D2IMj, EXTVER, comment) of a distortion record card naming the EXTVER of
    its WCSDVARR/D2IMARR table, else None. astropy reads `DP1 = 'EXTVER: 1'` as keyword
    'DP1.EXTVER' with value 1.0 (record-valued card); an unparsed string is accepted too."""
    name = entry.rawkeyword
    if not LOOKUP_RECORD_PATTERN.match(name):
        return None
    if entry.field_specifier is not None:
        if entry.field_specifier.upper() != "EXTVER":
            return None
        return name, int(entry.value), entry.comment
    match = re.fullmatch(r"\s*EXTVER\s*:\s*(\d+)\s*", str(entry.value))
    return (name, int(match.group(1)), entry.comment) if match else None


def _number_card(key: str, value: float) -> str:
    return f"{key:<8}= {format_value(value)}".ljust(80)


_END_CARD = f"{'END':<80}"
_CUT_FORMATS = [  # two cards, each exactly 80 characters once the numbers are in
    f"CUT{name}0   = {{:>20d}} / first source pixel, axis {axis + 1}".ljust(80 - 13)
    + f"CUT{name}1   = {{:>20d}} / last source pixel, axis {axis + 1}".ljust(80 - 13)
    for axis, name in enumerate(CUT_NAMES)
]  # "{:>20d}" is 7 characters and becomes 20: pad the template to 67


def data_padding(nbytes: int) -> bytes:
    return b"\0" * (-nbytes % BLOCK)


def hdu_bytes(header_bytes: bytes, data: np.ndarray) -> bytes:
    """One HDU: header + big-endian data + zero padding."""
    raw = np.ascontiguousarray(data).tobytes()
    return header_bytes + raw + data_padding(len(raw))


def empty_primary_bytes(extra_cards: Iterable[str] = ()) -> bytes:
    """A data-less primary HDU for multi-extension files."""
    text = card("SIMPLE", True) + card("BITPIX", 8) + card("NAXIS", 0) + card("EXTEND", True)
    text += "".join(extra_cards) + f"{'END':<80}"
    return (text + " " * (-len(text) % BLOCK)).encode("ascii")


def shifted_lookup_bytes(lookup_hdus: list[fits.ImageHDU], origin: tuple[int, int],
                         extver_offset: int = 0, extname: str | None = None) -> bytes:
    """WCSDVARR/D2IMARR extensions with CRVAL moved by the cutout origin (Paper IV)."""
    parts = []
    for hdu in lookup_hdus:
        header = hdu.header.copy()
        for axis in (1, 2):
            if f"CRVAL{axis}" in header:
                header[f"CRVAL{axis}"] = float(header[f"CRVAL{axis}"]) - origin[axis - 1]
        header["EXTVER"] = int(header.get("EXTVER", 1)) + extver_offset
        data = np.asarray(hdu.data)
        data = data.astype(data.dtype.newbyteorder(">"))
        header_text = header.tostring()
        parts.append(header_text.encode("ascii") + data.tobytes() + data_padding(data.nbytes))
    return b"".join(parts)


_temp_counter = itertools.count()


def atomic_write(path: str | Path, chunks: Iterable[bytes]) -> Path:
    """Write chunks to `path` through a temporary file and rename (never a half file).

    The temporary name is unique per process and call (pid + counter) and opened with
    O_EXCL, cheaper than mkstemp's random names when writing thousands of stamps.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{next(_temp_counter)}.part")
    try:
        stream = open(temp, "xb")  # noqa: SIM115 - closed below, before the rename
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(temp, "xb")  # noqa: SIM115
    try:
        with stream:
            for chunk in chunks:
                stream.write(chunk)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
