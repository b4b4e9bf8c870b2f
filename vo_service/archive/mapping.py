"""The archive mapping: TOML rules that turn file names and FITS headers into metadata.

See ``default_mapping.toml`` (shipped with the package) for the format and precedence.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vo_service.archive import passbands
from vo_service.archive.passbands import Passband

FIELDS = ("collection", "instrument", "facility", "band", "product_type", "tile", "target",
          "calib_level", "o_ucd")
# Keys of [[rules]] and [bands.NAME] that fix the spectral range: a filter curve by name
# (see vo_service/archive/passbands.py) or em_min/em_max in metres.
RANGE_KEYS = ("curve", "em_min", "em_max")
# Kinds of product that are not images, and the product types of each ([products]).
PRODUCT_KINDS = ("psf", "catalog")


class MappingError(ValueError):
    """A mapping file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class BandRange:
    """A spectral range fixed by the mapping: a filter curve by name, or em_min/em_max
    (metres)."""

    name: str
    em_min: float | None = None
    em_max: float | None = None
    curve: str | None = None

    def passband(self) -> Passband:
        """The range as a Passband (the curve's half-maximum range, or the numbers)."""
        if self.curve is not None:
            return passbands.passband(self.curve)
        assert self.em_min is not None and self.em_max is not None
        return Passband(self.name, self.em_min, self.em_max, "archive mapping")


@dataclass(frozen=True)
class Rule:
    """A file-name pattern with named groups, and fixed values for files it matches
    (``band_range``: a spectral range that wins over the band's own)."""

    name: str
    pattern: re.Pattern[str]
    values: dict[str, Any]
    band_range: BandRange | None = None


@dataclass(frozen=True)
class Assigned:
    """Metadata assigned to one image HDU by the mapping."""

    collection: str
    instrument: str | None = None
    facility: str | None = None
    band: str | None = None
    product_type: str | None = None
    tile: str | None = None
    target: str | None = None
    calib_level: int = 2
    o_ucd: str | None = None
    band_range: Passband | None = None


@dataclass(frozen=True)
class ArchiveMapping:
    """Rules, header keywords, defaults and named bands (see ``default_mapping.toml``)."""

    rules: tuple[Rule, ...] = ()
    keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    bands: dict[str, BandRange] = field(default_factory=dict)
    fingerprint: str = ""
    product_kinds: dict[str, str] = field(default_factory=dict)  # PRODUCT TYPE -> kind
    zero_points: dict[str, float] = field(default_factory=dict)  # band -> magnitude zero point

    def product_kind(self, product_type: str | None) -> str | None:
        """``psf`` or ``catalog`` for the product types [products] lists, else None."""
        if not product_type:
            return None
        return self.product_kinds.get(product_type.upper())

    def band_range(self, band: str | None) -> BandRange | None:
        """The named band's range: exact name or alias first, then case-insensitively."""
        if not band:
            return None
        if band in self.bands:
            return self.bands[band]
        folded = {name.casefold(): rng for name, rng in self.bands.items()}
        return folded.get(band.casefold())

    def assign(self, relative_path: str, header: Callable[[str], Any],
               primary: Callable[[str], Any] | None = None) -> Assigned:
        """Metadata of an HDU of the file at ``relative_path`` (posix, relative to its root).

        ``header(keyword)`` reads the HDU's own header, ``primary(keyword)`` the primary
        header of a multi-extension file (None for the primary HDU itself); both return None
        for absent or blank keywords. Precedence per field: fixed values of matching rules,
        the HDU's header, named groups of matching rules, the primary header, defaults.
        The spectral range: a matching rule's curve or em_min/em_max, else the band's entry
        in [bands], else the filter identified from band, instrument and telescope
        (`passbands.identify`), else None.
        """
        found: dict[str, Any] = {}
        matches = [m for m in (rule.pattern.search(relative_path) for rule in self.rules) if m]
        for rule in self.rules:
            if rule.pattern.search(relative_path):
                for name, value in rule.values.items():
                    found.setdefault(name, value)
        self._from_header(found, header)
        for match in matches:
            for name, value in match.groupdict().items():
                if value is not None and name in FIELDS:
                    found.setdefault(name, value)
        if primary is not None:
            self._from_header(found, primary)
        for name, value in self.defaults.items():
            found.setdefault(name, value)
        if "collection" not in found:
            parts = relative_path.split("/")
            found["collection"] = parts[0] if len(parts) > 1 else ""
        strings = {name: None if found.get(name) is None else str(found[name])
                   for name in FIELDS if name != "calib_level"}
        try:
            calib = int(found.get("calib_level", 2))
        except (TypeError, ValueError):
            calib = 2
        return Assigned(**strings, calib_level=min(max(calib, 0), 4),
                        band_range=self._passband(relative_path, strings, header, primary))

    def _passband(self, relative_path: str, strings: dict[str, str | None],
                  header: Callable[[str], Any], primary: Callable[[str], Any] | None,
                  ) -> Passband | None:
        """The spectral range of an HDU (precedence: see `assign`)."""
        fixed = next((rule.band_range for rule in self.rules
                      if rule.band_range is not None and rule.pattern.search(relative_path)),
                     None) or self.band_range(strings["band"])
        if fixed is not None:
            return fixed.passband()

        def either(key: str) -> Any:
            value = _clean(header(key))
            return value if value is not None or primary is None else _clean(primary(key))

        name = passbands.identify(strings["band"], strings["instrument"], strings["facility"],
                                  either)
        return passbands.passband(name) if name is not None else None

    def _from_header(self, found: dict[str, Any], header: Callable[[str], Any]) -> None:
        """Fill fields not yet found from the header keywords listed in [keywords]."""
        for name, keys in self.keywords.items():
            if name in found:
                continue
            for key in keys:
                value = _clean(header(key))
                if value is not None:
                    found[name] = value
                    break


def _clean(value: Any) -> Any:
    """Header values: blank strings are absent; strings are stripped."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, bool):
        return None
    return value


def parse_mapping(text: str, source: str = "mapping") -> ArchiveMapping:
    """Build a mapping from TOML text; raises MappingError naming what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{source}: not valid TOML: {exc}") from exc
    rules = []
    for number, entry in enumerate(data.get("rules", []), start=1):
        if "pattern" not in entry:
            raise MappingError(f"{source}: rule {number} has no 'pattern'")
        try:
            pattern = re.compile(entry["pattern"])
        except re.error as exc:
            raise MappingError(f"{source}: rule {number} pattern: {exc}") from exc
        unknown = set(entry) - {"name", "pattern", *FIELDS, *RANGE_KEYS}
        if unknown:
            raise MappingError(f"{source}: rule {number}: unknown keys {sorted(unknown)}")
        values = {k: v for k, v in entry.items() if k in FIELDS}
        name = str(entry.get("name", f"rule {number}"))
        band_range = (_band_range(name, entry, f"{source}: rule {number}")
                      if set(entry) & set(RANGE_KEYS) else None)
        rules.append(Rule(name, pattern, values, band_range))
    keywords = {}
    for name, keys in data.get("keywords", {}).items():
        if name not in FIELDS:
            raise MappingError(f"{source}: [keywords] {name!r} is not one of {FIELDS}")
        keys = [keys] if isinstance(keys, str) else list(keys)
        keywords[name] = tuple(str(k).upper() for k in keys)
    defaults = dict(data.get("defaults", {}))
    unknown = set(defaults) - set(FIELDS)
    if unknown:
        raise MappingError(f"{source}: [defaults] unknown keys {sorted(unknown)}")
    bands: dict[str, BandRange] = {}
    for name, spec in data.get("bands", {}).items():
        band_range = _band_range(name, spec, f"{source}: [bands.{name}]")
        for alias in [name, *spec.get("aliases", [])]:
            bands[str(alias)] = band_range
    product_kinds: dict[str, str] = {}
    for kind, types in data.get("products", {}).items():
        if kind not in PRODUCT_KINDS:
            raise MappingError(f"{source}: [products] {kind!r} is not one of {PRODUCT_KINDS}")
        for product_type in [types] if isinstance(types, str) else list(types):
            product_kinds[str(product_type).upper()] = kind
    zero_points: dict[str, float] = {}
    for band, value in data.get("zero_points", {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MappingError(f"{source}: [zero_points] {band!r} must be a number (mag)")
        zero_points[str(band)] = float(value)
    # the identification rules are part of what the mapping means: a new version of them
    # re-reads every file, as a changed mapping file does
    fingerprint = hashlib.sha256(
        (text + passbands.RULES_VERSION).encode()).hexdigest()[:16]
    return ArchiveMapping(tuple(rules), keywords, defaults, bands, fingerprint, product_kinds,
                          zero_points)


def _band_range(name: str, spec: dict[str, Any], where: str) -> BandRange:
    """A `BandRange` from ``curve = "..."`` or ``em_min``/``em_max``; MappingError else."""
    if "curve" in spec:
        curve = str(spec["curve"])
        if not passbands.is_known(curve):
            raise MappingError(f"{where}: unknown filter curve {curve!r} (a speclite curve "
                               "such as 'decamDR1-r', or a name from passbands.HAND_TABLE)")
        return BandRange(name, curve=curve)
    try:
        lo, hi = float(spec["em_min"]), float(spec["em_max"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MappingError(f"{where} needs a curve or numbers em_min, em_max") from exc
    if not 0 < lo < hi:
        raise MappingError(f"{where} needs 0 < em_min < em_max (metres)")
    return BandRange(name, lo, hi)


def default_mapping_text() -> str:
    """The TOML text of the mapping shipped with the package."""
    return resources.files("vo_service.archive").joinpath("default_mapping.toml").read_text()


def load_mapping(path: Path | str | None = None) -> ArchiveMapping:
    """The mapping in ``path`` (TOML), or the packaged default when None."""
    if path is None:
        return parse_mapping(default_mapping_text(), "default_mapping.toml")
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from exc
    return parse_mapping(text, str(path))


def header_lookup(*headers: Mapping[str, Any]) -> Callable[[str], Any]:
    """A keyword getter that tries each header in turn (extension first, then primary)."""
    def get(key: str) -> Any:
        for header in headers:
            value = _clean(header.get(key)) if key in header else None
            if value is not None:
                return value
        return None
    return get
