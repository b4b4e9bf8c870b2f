"""Colour composites: RGB of the right size, colours kept, shape mismatches handled."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vo_service.engine.composite import CompositeError, render_composite


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _bands(shape: tuple[int, int] = (64, 80)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A source at FITS pixel (x=40, y=20) bright in red, faint in green and blue."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[: shape[0], : shape[1]]
    source = np.exp(-((x - 40) ** 2 + (y - 20) ** 2) / 8.0)
    return tuple(  # type: ignore[return-value]
        rng.normal(0.0, 0.01, shape) + source * flux for flux in (10.0, 0.5, 0.3)
    )


def test_composite_is_rgb_of_the_band_size() -> None:
    image = _open(render_composite(*_bands()))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (80, 64))
    jpeg = _open(render_composite(*_bands(), fmt="jpeg", size=40))
    assert (jpeg.format, jpeg.size) == ("JPEG", (40, 32))


def test_a_source_bright_in_red_is_red_and_upright() -> None:
    pixels = np.asarray(_open(render_composite(*_bands()))).astype(int)
    red, green, blue = pixels[63 - 20, 40]  # FITS row 20 counted from the bottom
    assert red > 200 and red > 3 * max(green, blue)
    assert pixels[20, 40].sum() < 60  # the mirrored position is background


def test_equalized_bands_lose_the_colour_of_a_lone_source() -> None:
    pixels = np.asarray(_open(render_composite(*_bands(), equalize=True))).astype(int)
    red, green, blue = pixels[63 - 20, 40]
    assert max(red, green, blue) < 2 * min(red, green, blue)


def test_fixed_scales_weight_the_bands() -> None:
    red, green, blue = _bands()
    pixels = np.asarray(_open(render_composite(red, green, blue, scales=(0.01, 1.0, 1.0))))
    r, g, b = pixels[63 - 20, 40].astype(int)
    assert g > r


def test_different_shapes_are_resampled_cropped_or_refused() -> None:
    red, green, blue = _bands()
    half_green = green[::2, ::2]
    assert _open(render_composite(red, half_green, blue)).size == (80, 64)
    assert _open(render_composite(red, half_green, blue, match="crop")).size == (40, 32)
    with pytest.raises(CompositeError, match=r"different shapes \(r 80x64, g 40x32, b 80x64\)"):
        render_composite(red, half_green, blue, match="refuse")
    with pytest.raises(CompositeError, match="cut the same region of sky"):
        render_composite(red, green[:, :20], blue)


def test_blank_pixels_are_black() -> None:
    red, green, blue = _bands()
    green[:10, :] = np.nan
    pixels = np.asarray(_open(render_composite(red, green, blue)))
    assert pixels[-10:].max() == 0


def test_all_blank_bands_render() -> None:
    blank = np.full((8, 8), np.nan)
    assert _open(render_composite(blank, blank, blank)).size == (8, 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "gif"}, "format must be png or jpeg"),
        ({"stretch": -1.0}, "must be positive"),
        ({"scales": (1.0, 0.0, 1.0)}, "three positive numbers"),
        ({"match": "stretch"}, "match must be one of resample, crop, refuse"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(CompositeError, match=message):
        render_composite(*_bands(), **kwargs)
