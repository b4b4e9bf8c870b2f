"""The options of PSF and catalog products, and of photometry on stamps, parsed once.

Shared by ``/sync`` (SODA), catalog jobs, the CLI and the Python API, so that a value means
the same wherever it is sent (``docs/products.md``):

- ``PSF``: ``nearest`` (default) or ``interpolated``;
- ``COLUMNS``: catalog columns to return (comma- or space-separated; default: all);
- ``PHOTOMETRY``: ``true`` measures aperture fluxes on the science stamps of a job;
  ``APERTURE`` radii (repeatable, or several in one value), ``APERTURE_UNIT`` ``arcsec``
  (default) or ``pix``, ``ANNULUS`` ``<inner> <outer>`` of the background ring in the same
  unit (default 2x and 3x the largest radius).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vo_service.engine.psf import METHODS, NEAREST

APERTURE_UNITS = ("arcsec", "pix")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
MAX_APERTURES = 8


class ProductError(ValueError):
    """A PSF, catalog or photometry request that cannot be answered as asked; the message
    says what to fix (the protocols answer it as a DALI UsageError)."""


@dataclass(frozen=True)
class PhotometryOptions:
    """Aperture radii and background annulus (in ``unit``: arcsec or pix)."""

    radii: tuple[float, ...] = (1.0,)
    annulus: tuple[float, float] | None = None
    unit: str = "arcsec"

    @property
    def ring(self) -> tuple[float, float]:
        """The background annulus: the one given, else 2x and 3x the largest radius."""
        if self.annulus is not None:
            return self.annulus
        largest = max(self.radii)
        return 2.0 * largest, 3.0 * largest


@dataclass(frozen=True)
class ProductOptions:
    """How PSF and catalog products are made, and photometry (None: off)."""

    psf_method: str = NEAREST
    columns: tuple[str, ...] = ()
    photometry: PhotometryOptions | None = None


def parse_psf_method(value: str | None) -> str:
    """``nearest`` or ``interpolated`` (case-insensitive); absent means nearest."""
    if value is None or not value.strip():
        return NEAREST
    method = value.strip().lower()
    if method not in METHODS:
        raise ProductError(f"PSF must be {' or '.join(METHODS)}, got {value!r}")
    return method


def parse_columns(values: Sequence[str]) -> tuple[str, ...]:
    """Column names from values separated by commas or spaces (order kept, no repeats)."""
    names = [name for value in values for name in re.split(r"[,\s]+", value) if name]
    for name in names:
        if len(name) > 128 or not re.fullmatch(r"[\w.\-\[\]()]+", name):
            raise ProductError(f"COLUMNS: {name[:40]!r} is not a column name")
    return tuple(dict.fromkeys(names))


def parse_flag(name: str, value: str | None) -> bool:
    """A boolean parameter (true/false, yes/no, on/off, 1/0); absent is false."""
    if value is None or not value.strip():
        return False
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ProductError(f"{name} must be true or false, got {value!r}")


def _positive_numbers(name: str, values: Sequence[str]) -> list[float]:
    numbers = []
    for value in values:
        for text in re.split(r"[,\s]+", value.strip()):
            if not text:
                continue
            try:
                number = float(text)
            except ValueError as exc:
                raise ProductError(f"{name}: {text!r} is not a number") from exc
            if not (math.isfinite(number) and number > 0):
                raise ProductError(f"{name} must be positive numbers, got {text!r}")
            numbers.append(number)
    return numbers


def parse_photometry(enabled: str | None, apertures: Sequence[str], unit: str | None,
                     annulus: str | None) -> PhotometryOptions | None:
    """Photometry options, or None when PHOTOMETRY is not true (and nothing else given)."""
    on = parse_flag("PHOTOMETRY", enabled)
    if not on:
        if apertures or annulus:
            raise ProductError("APERTURE and ANNULUS need PHOTOMETRY=true")
        return None
    chosen_unit = (unit or "arcsec").strip().lower()
    if chosen_unit in ("pixel", "pixels"):
        chosen_unit = "pix"
    if chosen_unit not in APERTURE_UNITS:
        raise ProductError(f"APERTURE_UNIT must be arcsec or pix, got {unit!r}")
    radii = sorted(set(_positive_numbers("APERTURE", apertures))) or [1.0]
    if len(radii) > MAX_APERTURES:
        raise ProductError(f"at most {MAX_APERTURES} APERTURE radii, got {len(radii)}")
    ring = None
    if annulus is not None and annulus.strip():
        values = _positive_numbers("ANNULUS", [annulus])
        if len(values) != 2 or not values[0] < values[1]:
            raise ProductError(f"ANNULUS must be '<inner> <outer>' with inner < outer, got "
                             f"{annulus!r}")
        if values[0] < max(radii):
            raise ProductError(f"ANNULUS: the inner radius {values[0]:g} is inside the largest "
                             f"aperture ({max(radii):g} {chosen_unit}); the ring must lie "
                             "outside it")
        ring = (values[0], values[1])
    return PhotometryOptions(tuple(radii), ring, chosen_unit)
