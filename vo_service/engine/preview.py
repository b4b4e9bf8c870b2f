"""PNG/JPEG previews of image cutouts: limits, stretch, binning, resizing.

Rendering choices a reader could not guess:

- FITS row 0 is the *bottom* row of the image (FITS 4.0 §3.3.2), image files start at the
  top, so the array is flipped vertically: with a standard WCS north is up, east left.
- NaN and infinite pixels are ignored when computing limits and rendered black (also when
  ``invert`` is set, so that blank areas stay recognisable as "no data").
- Cubes (ndim > 2) are collapsed to one plane: the NaN-ignoring *mean* over every axis but
  the last two (numpy order), i.e. an integrated (moment-0-like) image — the first plane of a
  spectral cube is often empty noise. Length-1 axes are dropped first.
- ``size`` is an upper bound of the longest side: large images are shrunk (Lanczos), small
  ones are never enlarged (the browser can scale them with ``image-rendering: pixelated``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from astropy.visualization import (
    AsinhStretch,
    LinearStretch,
    LogStretch,
    ManualInterval,
    MinMaxInterval,
    PercentileInterval,
    SqrtStretch,
    ZScaleInterval,
)
from PIL import Image

FORMATS = ("png", "jpeg")
STRETCHES = {
    "linear": LinearStretch,
    "sqrt": SqrtStretch,
    "log": LogStretch,
    "asinh": AsinhStretch,
}
NAMED_LIMITS = ("zscale", "minmax")
MAX_BINNING = 64
MAX_SIZE = 8192
# Percentiles are computed on a random sample of this many pixels for larger images.
PERCENTILE_SAMPLES = 200_000


def _check_fmt(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in FORMATS:
        raise ValueError(f"preview format must be png or jpeg, got {fmt!r}")
    return fmt


def _check_stretch(stretch: str) -> str:
    stretch = stretch.lower()
    if stretch not in STRETCHES:
        raise ValueError(
            f"stretch must be one of {', '.join(STRETCHES)}, got {stretch!r}"
        )
    return stretch


def _check_limits(limits: str | float) -> str | float:
    if isinstance(limits, str):
        text = limits.strip().lower()
        if text in NAMED_LIMITS:
            return text
        try:
            limits = float(text)
        except ValueError:
            raise ValueError(
                "limits must be zscale, minmax or a percentile in (0, 100] such as 99.5, "
                f"got {limits!r}"
            ) from None
    value = float(limits)
    if not (np.isfinite(value) and 0.0 < value <= 100.0):
        raise ValueError(f"limits percentile must be in (0, 100], got {value}")
    return value


def _check_int(name: str, value: int | None, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)


def _parse_int(name: str, text: str) -> int:
    digits = text.strip().lstrip("+-")
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"{name} must be an integer, got {text[:40]!r}")
    if len(digits.lstrip("0")) > 18:  # never convert thousands of digits; far beyond any limit
        raise ValueError(f"{name} is out of range ({len(digits)} digits)")
    return int(text.strip())


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {text!r}")


@dataclass(frozen=True)
class PreviewOptions:
    """How to render a preview; validated on construction (ValueError says what to fix)."""

    fmt: str = "png"
    stretch: str = "linear"
    limits: str | float = "zscale"
    invert: bool = False
    binning: int = 1
    size: int | None = None
    quality: int = 90

    def __post_init__(self) -> None:
        object.__setattr__(self, "fmt", _check_fmt(self.fmt))
        object.__setattr__(self, "stretch", _check_stretch(self.stretch))
        object.__setattr__(self, "limits", _check_limits(self.limits))
        object.__setattr__(self, "binning", _check_int("binning", self.binning, 1, MAX_BINNING))
        object.__setattr__(self, "size", _check_int("size", self.size, 1, MAX_SIZE))
        object.__setattr__(self, "quality", _check_int("quality", self.quality, 1, 95))
        object.__setattr__(self, "invert", bool(self.invert))

    @classmethod
    def from_params(cls, params: Mapping[str, str | None], *, fmt: str = "png") -> PreviewOptions:
        """Options from text parameters (STRETCH, LIMITS, INVERT, BINNING, SIZE, QUALITY).

        Names are case-insensitive; missing or empty values take the defaults.
        """
        given = {key.lower(): value for key, value in params.items() if value not in (None, "")}
        kwargs: dict[str, object] = {"fmt": given.get("format", fmt)}
        if "stretch" in given:
            kwargs["stretch"] = given["stretch"]
        if "limits" in given:
            kwargs["limits"] = given["limits"]
        if "invert" in given:
            kwargs["invert"] = _parse_bool("INVERT", given["invert"])
        for name in ("binning", "size", "quality"):
            if name in given:
                kwargs[name] = _parse_int(name.upper(), given[name])
        return cls(**kwargs)  # type: ignore[arg-type]

    def cache_key(self) -> str:
        """A stable text for cache keys: equal options give equal keys."""
        return ";".join(f"{name}={value}" for name, value in sorted(asdict(self).items()))

    @property
    def media_type(self) -> str:
        """The MIME type of the rendered bytes."""
        return f"image/{self.fmt}"

    def render(self, array: np.ndarray) -> bytes:
        """Render ``array`` with these options."""
        return render_preview(array, **asdict(self))


def to_plane(array: np.ndarray) -> np.ndarray:
    """A float 2-D plane from an image or cube (NaN-mean over the leading axes)."""
    if np.ma.isMaskedArray(array):
        array = np.ma.filled(array.astype(float), np.nan)
    plane = np.asarray(array)
    if plane.dtype.kind == "b":
        plane = plane.astype(np.float32)
    elif plane.dtype.kind not in "f":
        plane = plane.astype(np.float64)
    if plane.ndim > 2:
        plane = plane.reshape([n for n in plane.shape if n != 1] or [1])
    if plane.ndim > 2:
        leading = tuple(range(plane.ndim - 2))
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            plane = np.nanmean(plane, axis=leading)
    if plane.ndim == 1:
        plane = plane[np.newaxis, :]
    if plane.ndim == 0 or plane.size == 0:
        raise ValueError("cannot render a preview of an empty array")
    return plane


def bin_plane(plane: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by ``factor`` (NaN-ignoring); edge rows/columns that do not fill a block
    are dropped; a factor larger than an axis shrinks that axis to one pixel."""
    if factor == 1:
        return plane
    rows, cols = plane.shape
    fy, fx = min(factor, rows), min(factor, cols)
    trimmed = plane[: rows // fy * fy, : cols // fx * fx]
    blocks = trimmed.reshape(rows // fy, fy, cols // fx, fx)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def _limits(values: np.ndarray, limits: str | float) -> tuple[float, float]:
    if limits == "zscale":
        vmin, vmax = ZScaleInterval().get_limits(values)
    elif limits == "minmax":
        vmin, vmax = MinMaxInterval().get_limits(values)
    else:
        samples = PERCENTILE_SAMPLES if values.size > PERCENTILE_SAMPLES else None
        vmin, vmax = PercentileInterval(float(limits), n_samples=samples).get_limits(values)
    if not vmax > vmin:  # zscale/percentile collapsed on a near-constant image
        vmin, vmax = float(values.min()), float(values.max())
    return float(vmin), float(vmax)


def scale_to_unit(
    plane: np.ndarray, *, stretch: str = "linear", limits: str | float = "zscale"
) -> np.ndarray:
    """Map a 2-D float plane to [0, 1] (limits then stretch); non-finite pixels give NaN."""
    finite = np.isfinite(plane)
    values = plane[finite]
    unit = np.full(plane.shape, np.nan, dtype=np.float64)
    if values.size == 0:
        return unit
    vmin, vmax = _limits(values, limits)
    if not vmax > vmin:  # constant image: everything at the bottom of the scale
        unit[finite] = 0.0
        return unit
    # ImageNormalize needs matplotlib; interval then stretch is the same mapping without it.
    normalized = ManualInterval(vmin, vmax)(values.astype(np.float64), clip=True)
    unit[finite] = STRETCHES[stretch]()(normalized, clip=True)
    return unit


def unit_to_image(unit: np.ndarray, *, invert: bool = False) -> Image.Image:
    """An 8-bit greyscale Pillow image (top row first) from a [0, 1] plane (NaN → black)."""
    scaled = 1.0 - unit if invert else unit
    grey = np.nan_to_num(np.clip(scaled, 0.0, 1.0), nan=0.0)
    pixels = np.round(grey * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels[::-1]), mode="L")


def fit_size(image: Image.Image, size: int | None) -> Image.Image:
    """Shrink (never enlarge) so that the longest side is at most ``size``."""
    if size is None or max(image.size) <= size:
        return image
    ratio = size / max(image.size)
    new_size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return image.resize(new_size, Image.Resampling.LANCZOS)


def encode_image(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """PNG or JPEG bytes of a Pillow image."""
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_preview(
    array: np.ndarray,
    *,
    fmt: str = "png",
    stretch: str = "linear",
    limits: str | float = "zscale",
    invert: bool = False,
    binning: int = 1,
    size: int | None = None,
    quality: int = 90,
) -> bytes:
    """PNG or JPEG bytes showing ``array`` (2-D image, or a cube collapsed to one plane).

    Parameters
    ----------
    fmt : 'png' or 'jpeg'
    stretch : 'linear', 'sqrt', 'log' or 'asinh' (astropy.visualization stretches)
    limits : 'zscale', 'minmax' or a percentile such as 99.5 (central fraction kept)
    invert : black on white instead of white on black
    binning : integer block-average factor applied before everything else
    size : maximum side of the output in pixels (aspect kept, never enlarged)
    quality : JPEG quality (1-95)

    Raises
    ------
    ValueError
        On an unknown option value or an empty array; the message says what is allowed.
    """
    options = PreviewOptions(fmt, stretch, limits, invert, binning, size, quality)
    plane = bin_plane(to_plane(array), options.binning)
    unit = scale_to_unit(plane, stretch=options.stretch, limits=options.limits)
    image = fit_size(unit_to_image(unit, invert=options.invert), options.size)
    return encode_image(image, options.fmt, options.quality)
