"""Spectral ranges of photometric filters, for the em_min/em_max of images.

The rule: an image's ``em_min``/``em_max`` are the outermost wavelengths where its filter's
response curve is at half its peak (the full width at half maximum, interpolated linearly
between samples); ``em_res_power`` is the range's middle over its width.

Curves come from ``speclite`` (desihub/speclite, BSD-3): the filter response tables it ships
(Euclid VIS/Y/J/H, DECam and DES DR1, SDSS, 2MASS, Bessell, WISE, GALEX, Gaia, HSC, LSST,
Pan-STARRS, CFHT MegaCam...) are read from the installed package, never downloaded. Bands it
does not ship are in ``HAND_TABLE`` below, each with the source of its numbers.

Which filter an image saw is identified from its band name (``FILTER``/``BAND`` through the
archive mapping), instrument and telescope: ``identify`` knows instrument families
(``INSTRUME = DECam`` + ``FILTER = r DECam SDSS c0002 ...`` is DES r) and, without one, the
usual meaning of a band letter (``g`` SDSS, ``R`` Bessell, ``Ks`` 2MASS). A wavelength keyword
(``WAVELEN``, ``WAVELENG``, ``WAVELNTH``) gives a single wavelength when nothing else does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits

HALF_MAXIMUM = 0.5  # the fraction of the peak response that bounds em_min/em_max
# Part of the archive mapping's fingerprint: a change to these rules re-reads every file.
RULES_VERSION = "passbands-1"
WAVELENGTH_KEYWORDS = ("WAVELEN", "WAVELENG", "WAVELNTH")
HeaderGetter = Callable[[str], Any]


@dataclass(frozen=True)
class Passband:
    """A filter's wavelength interval (metres) and where it came from."""

    name: str
    em_min: float
    em_max: float
    source: str = ""

    @property
    def em_res_power(self) -> float | None:
        """lambda / delta-lambda of the interval (None for a single wavelength)."""
        width = self.em_max - self.em_min
        return (self.em_min + self.em_max) / 2 / width if width > 0 else None


def half_maximum_range(wavelength: Sequence[float], response: Sequence[float]
                       ) -> tuple[float, float]:
    """Outermost wavelengths where ``response`` crosses half its peak (linear interpolation
    between samples; the ends of the table when the curve is still above half there)."""
    wave = np.asarray(wavelength, dtype=float)
    resp = np.asarray(response, dtype=float)
    level = HALF_MAXIMUM * float(resp.max())
    above = np.flatnonzero(resp >= level)
    first, last = int(above[0]), int(above[-1])
    low = wave[first] if first == 0 else float(
        np.interp(level, [resp[first - 1], resp[first]], [wave[first - 1], wave[first]]))
    high = wave[last] if last == wave.size - 1 else float(
        np.interp(level, [resp[last + 1], resp[last]], [wave[last + 1], wave[last]]))
    return float(low), float(high)


# --- bands no installed package ships ---------------------------------------------------
# Spitzer IRAC and UKIRT WFCAM: half-maximum edges (the rule above) of the response curves
# published by the IRAC team (IRAC Instrument Handbook §2.2, the "spectral response" files
# of the Spitzer Science Center) and by Hewett et al. 2006, MNRAS 367, 454 (WFCAM), as
# tabulated in astro-sedpy 0.4.1 (sedpy/data/filters/spitzer_irac_ch*.par,
# ukirt_wfcam_*.par), a package not installed here.
HAND_TABLE: dict[str, Passband] = {band.name: band for band in (
    Passband("Spitzer-IRAC-ch1", 3.1750e-6, 3.9181e-6, "IRAC Instrument Handbook §2.2"),
    Passband("Spitzer-IRAC-ch2", 3.9976e-6, 5.0073e-6, "IRAC Instrument Handbook §2.2"),
    Passband("Spitzer-IRAC-ch3", 5.0201e-6, 6.4112e-6, "IRAC Instrument Handbook §2.2"),
    Passband("Spitzer-IRAC-ch4", 6.4401e-6, 9.2712e-6, "IRAC Instrument Handbook §2.2"),
    Passband("UKIRT-WFCAM-J", 1.1691e-6, 1.3280e-6, "Hewett et al. 2006, MNRAS 367, 454"),
    Passband("UKIRT-WFCAM-H", 1.4921e-6, 1.7840e-6, "Hewett et al. 2006, MNRAS 367, 454"),
    Passband("UKIRT-WFCAM-K", 2.0291e-6, 2.3813e-6, "Hewett et al. 2006, MNRAS 367, 454"),
)}
# Photographic survey plates (DSS, SuperCOSMOS): emulsion + Schott long-pass glass. The
# blue edge is the glass's 50 % transmission wavelength, which its name states (Schott's
# naming: OG590 passes half at 590 nm); the red edge is where the emulsion's sensitivity
# ends (Kodak, "Scientific Imaging with Kodak Films and Plates", P-315: IIIa-J 540 nm,
# IIIa-F 690 nm, IV-N 900 nm). The combinations of the surveys are those of the USNO Image
# and Catalog Archive's table of photographic colours (SERC-ER/AAO-R IIIaF+OG590, SERC-J
# IIIaJ+GG395, POSS-II IIIaJ+GG385 and IIIaF+RG610, ESO-R IIIaF+RG630, AAO-N IVN+RG715).
GLASS_CUT_ON_NM = {"GG385": 385, "GG395": 395, "OG590": 590, "RG610": 610, "RG630": 630,
                   "RG715": 715}
EMULSION_CUT_OFF_NM = {"IIIaJ": 540, "IIIaF": 690, "IVN": 900}
DEFAULT_EMULSION = {"GG385": "IIIaJ", "GG395": "IIIaJ", "OG590": "IIIaF", "RG610": "IIIaF",
                    "RG630": "IIIaF", "RG715": "IVN"}
DEFAULT_GLASS = {"IIIaJ": "GG395", "IIIaF": "OG590", "IVN": "RG715"}  # UK Schmidt surveys
SURVEY_PLATES = {"SERC-J": "IIIaJ+GG395", "SERC-EJ": "IIIaJ+GG395", "SRC-J": "IIIaJ+GG395",
                 "SERC-ER": "IIIaF+OG590", "AAO-R": "IIIaF+OG590", "ESO-R": "IIIaF+RG630",
                 "AAO-N": "IVN+RG715", "SERC-I": "IVN+RG715", "POSS-II J": "IIIaJ+GG385",
                 "POSS-II F": "IIIaF+RG610", "POSSII-J": "IIIaJ+GG385",
                 "POSSII-F": "IIIaF+RG610"}


def _plate(name: str) -> Passband | None:
    emulsion, _, glass = name.partition("+")
    if emulsion not in EMULSION_CUT_OFF_NM or glass not in GLASS_CUT_ON_NM:
        return None
    low, high = GLASS_CUT_ON_NM[glass] * 1e-9, EMULSION_CUT_OFF_NM[emulsion] * 1e-9
    return Passband(name, low, high, "emulsion cut-off and glass cut-on") if low < high \
        else None


# --- curves shipped by speclite ---------------------------------------------------------
@functools.cache
def speclite_names() -> dict[str, list[str]]:
    """speclite's filter curves: group (``decamDR1``) -> band names (``g``, ``r``, ...),
    listed from its package data without importing it."""
    groups: dict[str, list[str]] = {}
    try:
        folder = resources.files("speclite").joinpath("data", "filters")
        entries = [entry.name for entry in folder.iterdir()]
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return groups
    for entry in sorted(entries):
        if entry.endswith(".ecsv") and "-" in entry:
            group, band = entry[: -len(".ecsv")].split("-", 1)
            groups.setdefault(group, []).append(band)
    return groups


def is_known(name: str) -> bool:
    """Whether ``passband(name)`` can answer (a speclite curve, or the hand table)."""
    group, _, band = name.partition("-")
    return (name in HAND_TABLE or _plate(name) is not None
            or band in speclite_names().get(group, []))


@functools.cache
def passband(name: str) -> Passband:
    """The named filter's half-maximum range: ``decamDR1-r`` (a speclite curve), a
    ``HAND_TABLE`` name or a plate (``IIIaF+OG590``); KeyError for an unknown name."""
    if name in HAND_TABLE:
        return HAND_TABLE[name]
    plate = _plate(name)
    if plate is not None:
        return plate
    if not is_known(name):
        raise KeyError(name)
    import speclite.filters  # imports scipy (~1 s): only once a curve is needed

    curve = speclite.filters.load_filter(name)
    low, high = half_maximum_range(curve.wavelength, curve.response)
    to_metres = (1.0 * speclite.filters.default_wavelength_unit).to_value(u.m)
    return Passband(name, low * to_metres, high * to_metres, f"speclite {name}")


# --- which filter an image saw ----------------------------------------------------------
# Instrument families: words of INSTRUME/TELESCOP (whole words, any case) -> filter sets,
# tried in order (speclite groups, or a prefix of HAND_TABLE names).
FAMILIES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("euclid", "vis", "nisp"), ("Euclid",)),
    (("decam", "blanco", "des"), ("decamDR1", "decam2014")),
    (("megaprime", "megacam"), ("cfht_megacam",)),
    (("hsc", "hyper suprime-cam"), ("hsc2017",)),
    (("gpc1", "ps1", "pan-starrs", "panstarrs"), ("panstarrs",)),
    (("lsst", "lsstcam", "rubin"), ("lsst2023",)),
    (("sdss",), ("sdss2010",)),
    (("2mass",), ("twomass",)),
    (("wise", "neowise"), ("wise2010",)),
    (("galex",), ("galex",)),
    (("gaia",), ("gaiadr3",)),
    (("wfcam", "ukirt"), ("UKIRT-WFCAM",)),
)
# A band letter without a known instrument: the system the letter usually means.
GENERIC = {**{b: f"sdss2010-{b}" for b in "ugriz"},
           **{b: f"bessell-{b}" for b in "UBVRI"},
           "Rc": "bessell-R", "Ic": "bessell-I",
           "J": "twomass-J", "H": "twomass-H", "Ks": "twomass-Ks", "K": "twomass-Ks",
           "K_s": "twomass-Ks", "KS": "twomass-Ks",
           **{f"W{n}": f"wise2010-W{n}" for n in range(1, 5)},
           "FUV": "galex-fuv", "NUV": "galex-nuv", "VIS": "Euclid-VIS"}
BAND_ALIASES = {"K": "Ks", "K_S": "Ks", "KS": "Ks"}  # within a family with a Ks filter
PREFIXES = re.compile(r"^(DES|SDSS|NIR|NISP|2MASS|WISE|PS1|HSC|LSST|CFHT|DECAM|EUCLID)[-_ ]+",
                      re.I)
IRAC_WAVELENGTHS = {"3.6": 1, "4.5": 2, "5.8": 3, "8.0": 4, "8": 4}


def band_tokens(band: str | None) -> list[str]:
    """Candidate filter names in a FILTER/BAND value, most specific first: the value, its
    first word (``r DECam SDSS c0002 6415.0 1480.0`` -> ``r``), the part before a dot
    (MegaCam ``g.MP9401`` -> ``g``), without a survey prefix (``DES-G`` -> ``G``)."""
    if not band:
        return []
    text = re.sub(r"[-_ ]?band$", "", band.strip(), flags=re.I)
    found: list[str] = []
    for candidate in (text, text.split()[0] if text.split() else "", text.split(".")[0]):
        for variant in (candidate, PREFIXES.sub("", candidate)):
            if variant and variant not in found:
                found.append(variant)
    return found


def _words(*texts: str | None) -> str:
    return " ".join(t for t in texts if t).casefold()


def _has_word(context: str, word: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", context) is not None


def _in_family(groups: tuple[str, ...], tokens: list[str]) -> str | None:
    """The first filter of ``groups`` named by a token (exact case first, then any)."""
    for group in groups:
        if group in speclite_names():
            bands = speclite_names()[group]
        else:
            bands = [n.split("-")[-1] for n in HAND_TABLE if n.startswith(group + "-")]
        for token in tokens:
            aliased = BAND_ALIASES.get(token.upper(), token) if "Ks" in bands else token
            for wanted in (token, aliased):
                if wanted in bands:
                    return f"{group}-{wanted}"
            folded = [b for b in bands if b.casefold() == aliased.casefold()]
            if len(folded) == 1:
                return f"{group}-{folded[0]}"
    return None


def _irac(tokens: list[str], header: HeaderGetter) -> str | None:
    for token in [*tokens, str(header("CHNLNUM") or "")]:
        text = token.casefold().removesuffix("um").removesuffix("micron").strip()
        match = re.fullmatch(r"(?:irac|ch|i)?[-_ ]?([1-4])", text)
        channel = int(match.group(1)) if match else IRAC_WAVELENGTHS.get(text)
        if channel:
            return f"Spitzer-IRAC-ch{channel}"
    return None


def _photographic(tokens: list[str], header: HeaderGetter) -> str | None:
    """A plate's emulsion+glass from FILTER (``OG590``), EMULSION or SURVEY keywords."""
    emulsion_text = str(header("EMULSION") or "").replace("-", "").replace(" ", "")
    emulsion = next((e for e in EMULSION_CUT_OFF_NM if e.casefold() == emulsion_text.casefold()),
                    None)
    for token in tokens:
        glass = token.upper()
        if glass in GLASS_CUT_ON_NM:
            return f"{emulsion or DEFAULT_EMULSION[glass]}+{glass}"
        named = next((e for e in EMULSION_CUT_OFF_NM
                      if e.casefold() == token.replace("-", "").casefold()), None)
        if named:
            return f"{named}+{DEFAULT_GLASS[named]}"
    survey = str(header("SURVEY") or "").strip().upper()
    return SURVEY_PLATES.get(survey)


def identify(band: str | None, instrument: str | None = None, facility: str | None = None,
             header: HeaderGetter = lambda key: None) -> str | None:
    """Name of the filter curve an image was taken through (see `passband`), or None."""
    tokens = band_tokens(band)
    context = _words(instrument, facility)
    if _has_word(context, "irac") or any(t.casefold().startswith("irac") for t in tokens):
        return _irac(tokens, header)
    plate = _photographic(tokens, header)
    if plate:
        return plate
    for words, groups in FAMILIES:
        if any(_has_word(context, word) for word in words):
            name = _in_family(groups, tokens)
            if name:
                return name
    for token in tokens:
        if token in GENERIC:
            return GENERIC[token]
        # any case only when every spelling means the same filter ("ks": Ks, KS)
        meanings = {name for key, name in GENERIC.items() if key.casefold() == token.casefold()}
        if len(meanings) == 1:
            return meanings.pop()
    return None


def header_wavelength(headers: Sequence[fits.Header]) -> Passband | None:
    """A single wavelength from ``WAVELEN``-like keywords, in the unit named at the start
    of the card's comment (``[um]``, ``mm (avoids CO 2-1)``) or else metres (the FITS unit
    of wavelength) when that is plausible (10 nm to 1 m)."""
    for header in headers:
        for key in WAVELENGTH_KEYWORDS:
            if key not in header or isinstance(header[key], bool | str):
                continue
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                continue
            metres = _in_metres(value, str(header.comments[key]))
            if metres is not None:
                return Passband(key, metres, metres, f"header {key}")
    return None


def _in_metres(value: float, comment: str) -> float | None:
    if not np.isfinite(value) or value <= 0:
        return None
    words = comment.strip().lstrip("[(").split()
    unit_text = re.split(r"[\])]", words[0])[0] if words else ""
    if unit_text:
        try:
            unit = u.Unit(unit_text.replace("micron", "um").replace("mum", "um"))
        except ValueError:
            unit = None  # the comment starts with words, not a unit
        if unit is not None and unit.physical_type == "length":
            return float((value * unit).to_value(u.m))
    return value if 1e-8 <= value <= 1.0 else None

