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

FIELDS = ("collection", "instrument", "facility", "band", "product_type", "tile", "target",
          "calib_level", "o_ucd")


class MappingError(ValueError):
    """A mapping file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Rule:
    """A file-name pattern with named groups, and fixed values for files it matches."""

    name: str
    pattern: re.Pattern[str]
    values: dict[str, Any]


@dataclass(frozen=True)
class BandRange:
    """A named band's wavelength interval, metres."""

    name: str
    em_min: float
    em_max: float


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
    band_range: BandRange | None = None


@dataclass(frozen=True)
class ArchiveMapping:
    """Rules, header keywords, defaults and named bands (see ``default_mapping.toml``)."""

    rules: tuple[Rule, ...] = ()
    keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    bands: dict[str, BandRange] = field(default_factory=dict)
    fingerprint: str = ""

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
                        band_range=self.band_range(strings["band"]))

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
        unknown = set(entry) - {"name", "pattern", *FIELDS}
        if unknown:
            raise MappingError(f"{source}: rule {number}: unknown keys {sorted(unknown)}")
        values = {k: v for k, v in entry.items() if k in FIELDS}
        rules.append(Rule(str(entry.get("name", f"rule {number}")), pattern, values))
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
        try:
            lo, hi = float(spec["em_min"]), float(spec["em_max"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MappingError(f"{source}: [bands.{name}] needs numbers em_min, em_max") from exc
        if not 0 < lo < hi:
            raise MappingError(f"{source}: [bands.{name}] needs 0 < em_min < em_max (metres)")
        for alias in [name, *spec.get("aliases", [])]:
            bands[str(alias)] = BandRange(name, lo, hi)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
    return ArchiveMapping(tuple(rules), keywords, defaults, bands, fingerprint)


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
