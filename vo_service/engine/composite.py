"""Colour composites: Lupton et al. (2004) asinh RGB from three bands.

This is the service's equivalent of astrocut ``img_cut(colorize=True)``, but with the
colour-preserving Lupton stretch (astropy ``make_lupton_rgb``) instead of three independent
grey stretches, so a source that is bright in one band keeps that band's hue when it
saturates.

Scaling: each band's background (median) is subtracted, then all three are divided by one
common bright level (the 99.5th percentile of their mean), which keeps the physical colour of
bands in the same flux unit (e.g. Euclid MER mosaics). For bands in unrelated units pass
``equalize=True`` (each band divided by its own bright level — colours then only show
relative differences) or fixed ``scales`` (e.g. from zero points).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from astropy.visualization import make_lupton_rgb
from PIL import Image

from vo_service.engine.preview import encode_image, fit_size, to_plane

MATCH_MODES = ("resample", "crop", "refuse")
# Bands whose aspect ratios differ by more than this do not show the same piece of sky.
ASPECT_TOLERANCE = 0.05


class CompositeError(ValueError):
    """Bands that cannot be combined; the message says what to fix."""


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape[::-1])  # width x height, as people read images


def _crop_centre(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    top = (plane.shape[0] - shape[0]) // 2
    left = (plane.shape[1] - shape[1]) // 2
    return plane[top : top + shape[0], left : left + shape[1]]


def _resample(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``shape`` (numpy order); NaN pixels stay NaN (nearest mask)."""
    if plane.shape == shape:
        return plane
    size = (shape[1], shape[0])
    blank = ~np.isfinite(plane)
    filled = np.where(blank, 0.0, plane).astype(np.float32)
    band_image = Image.fromarray(filled, mode="F")
    resampled = np.asarray(band_image.resize(size, Image.Resampling.BILINEAR))
    if blank.any():
        mask = Image.fromarray(blank.astype(np.uint8) * 255, mode="L")
        blank_out = np.asarray(mask.resize(size, Image.Resampling.NEAREST)) > 0
        resampled = np.where(blank_out, np.nan, resampled)
    return resampled.astype(np.float64)


def match_shapes(planes: Sequence[np.ndarray], match: str) -> list[np.ndarray]:
    """Bring 2-D planes to one shape: ``resample`` to the largest, ``crop`` to the common
    centre, or ``refuse`` (CompositeError) when they differ."""
    if match not in MATCH_MODES:
        raise CompositeError(f"match must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    shapes = [plane.shape for plane in planes]
    if len(set(shapes)) == 1:
        return list(planes)
    described = ", ".join(
        f"{name} {_shape_text(shape)}" for name, shape in zip("rgb", shapes, strict=True)
    )
    if match == "refuse":
        raise CompositeError(
            f"the three bands have different shapes ({described}); cut them to the same "
            "pixel size, or let the service crop or resample them"
        )
    if match == "crop":
        common = (min(s[0] for s in shapes), min(s[1] for s in shapes))
        return [_crop_centre(plane, common) for plane in planes]
    aspects = [s[1] / s[0] for s in shapes]
    if max(aspects) / min(aspects) > 1.0 + ASPECT_TOLERANCE:
        raise CompositeError(
            f"the three bands cover differently shaped areas ({described}); cut the same "
            "region of sky in every band"
        )
    target = max(shapes, key=lambda s: s[0] * s[1])
    return [_resample(plane, target) for plane in planes]


def _bright_level(plane: np.ndarray) -> float:
    """The 99.5th percentile of the finite pixels (the maximum if that is not positive)."""
    finite = plane[np.isfinite(plane)]
    if finite.size == 0:
        return 0.0
    bright = float(np.percentile(finite, 99.5))
    return bright if bright > 0 else float(finite.max())


def _normalised(planes: list[np.ndarray], background: bool, equalize: bool) -> list[np.ndarray]:
    """Background-subtracted bands divided by a bright level (common, or per band)."""
    shifted = []
    for plane in planes:
        finite = plane[np.isfinite(plane)]
        level = float(np.median(finite)) if background and finite.size else 0.0
        shifted.append(plane - level)
    if equalize:
        levels = [_bright_level(plane) for plane in shifted]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            levels = [_bright_level(np.mean(shifted, axis=0))] * 3
    return [
        plane / level if level > 0 else np.zeros_like(plane)
        for plane, level in zip(shifted, levels, strict=True)
    ]


def composite_array(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    *,
    stretch: float = 0.5,
    q: float = 8.0,
    scales: tuple[float, float, float] | None = None,
    background: bool = True,
    equalize: bool = False,
    match: str = "resample",
) -> np.ndarray:
    """An (ny, nx, 3) uint8 RGB array, top row first (FITS row 0 is the bottom: flipped)."""
    if not (np.isfinite(stretch) and stretch > 0 and np.isfinite(q) and q > 0):
        raise CompositeError(f"stretch and Q must be positive numbers, got {stretch} and {q}")
    planes = match_shapes([to_plane(band) for band in (red, green, blue)], match)
    if scales is None:
        scaled = _normalised(planes, background, equalize)
    else:
        if len(scales) != 3 or not all(np.isfinite(s) and s > 0 for s in scales):
            raise CompositeError(f"scales must be three positive numbers, got {scales}")
        scaled = [
            (plane - (np.nanmedian(plane) if background else 0.0)) * factor
            for plane, factor in zip(planes, scales, strict=True)
        ]
    blank = np.any([~np.isfinite(plane) for plane in scaled], axis=0)
    clean = [np.where(blank, 0.0, plane) for plane in scaled]
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        rgb = make_lupton_rgb(*clean, minimum=0.0, stretch=stretch, Q=q)
    rgb[blank] = 0
    return np.ascontiguousarray(rgb[::-1])


def render_composite(
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    *,
    fmt: str = "png",
    stretch: float = 0.5,
    q: float = 8.0,
    scales: tuple[float, float, float] | None = None,
    background: bool = True,
    equalize: bool = False,
    match: str = "resample",
    size: int | None = None,
    quality: int = 90,
) -> bytes:
    """PNG or JPEG bytes of a Lupton asinh RGB composite of three bands.

    Parameters
    ----------
    red, green, blue : 2-D arrays (cubes are collapsed like previews), FITS orientation
    stretch, q : Lupton's linear-range and asinh softening parameters (after scaling, a
        band's bright level is about 1)
    scales : fixed multiplicative factors per band instead of the automatic scaling
    background : subtract each band's median first
    equalize : divide each band by its own bright level (bands in unrelated units)
    match : bands of different shapes are ``resample``d to the largest, ``crop``ped to the
        common centre, or ``refuse``d
    size : maximum side of the output in pixels (never enlarged)

    Raises
    ------
    CompositeError
        Bands that cannot be combined or bad parameters; the message says what to fix.
    """
    fmt = fmt.lower().replace("jpg", "jpeg")
    if fmt not in ("png", "jpeg"):
        raise CompositeError(f"composite format must be png or jpeg, got {fmt!r}")
    pixels = composite_array(
        red,
        green,
        blue,
        stretch=stretch,
        q=q,
        scales=scales,
        background=background,
        equalize=equalize,
        match=match,
    )
    image = fit_size(Image.fromarray(pixels, mode="RGB"), size)
    return encode_image(image, fmt, quality)
