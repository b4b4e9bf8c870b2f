"""Previews: valid PNG/JPEG, right size, stretches, inversion, orientation, NaN safety."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from vo_service.engine.preview import PreviewOptions, render_preview


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _ramp(rows: int = 60, cols: int = 90) -> np.ndarray:
    return np.tile(np.linspace(0.0, 100.0, cols, dtype=np.float32), (rows, 1))


def test_png_and_jpeg_are_valid_images_of_the_array_size() -> None:
    png = _open(render_preview(_ramp(), fmt="png"))
    jpeg = _open(render_preview(_ramp(), fmt="jpeg", quality=80))
    assert (png.format, png.size, png.mode) == ("PNG", (90, 60), "L")
    assert (jpeg.format, jpeg.size) == ("JPEG", (90, 60))


def test_binning_divides_the_size_and_size_caps_the_longest_side() -> None:
    assert _open(render_preview(_ramp(60, 90), binning=3)).size == (30, 20)
    assert _open(render_preview(_ramp(60, 90), binning=4)).size == (22, 15)  # edges dropped
    assert _open(render_preview(_ramp(600, 900), size=300)).size == (300, 200)
    assert _open(render_preview(_ramp(60, 90), size=300)).size == (90, 60)  # never enlarged


def test_binning_block_averages() -> None:
    checker = np.indices((40, 40)).sum(axis=0) % 2 * 100.0
    checker[0, 0] = 0.0
    image = np.asarray(_open(render_preview(checker, binning=2, limits="minmax")))
    assert image.std() == 0  # every 2x2 block averages to 50


def test_sqrt_brightens_mid_tones_and_log_more_so() -> None:
    middle = {}
    for stretch in ("linear", "sqrt", "log", "asinh"):
        pixels = np.asarray(_open(render_preview(_ramp(), stretch=stretch, limits="minmax")))
        middle[stretch] = int(pixels[0, 45])
    assert 120 <= middle["linear"] <= 135
    assert middle["sqrt"] > middle["linear"] + 40
    assert middle["log"] > middle["sqrt"]
    assert middle["asinh"] > middle["linear"]


def test_invert_inverts() -> None:
    normal = np.asarray(_open(render_preview(_ramp(), limits="minmax"))).astype(int)
    inverted = np.asarray(_open(render_preview(_ramp(), limits="minmax", invert=True)))
    assert np.array_equal(normal + inverted, np.full(normal.shape, 255))


def test_fits_row_zero_is_shown_at_the_bottom() -> None:
    data = np.zeros((20, 30))
    data[0, :] = 100.0  # first FITS row: the bottom of the sky image
    pixels = np.asarray(_open(render_preview(data, limits="minmax")))
    assert pixels[-1].min() == 255 and pixels[0].max() == 0


def test_nan_and_inf_are_black_and_do_not_spoil_the_limits() -> None:
    data = _ramp()
    data[:10, :] = np.nan
    data[10:12, :] = np.inf
    data[12:14, :] = -np.inf
    pixels = np.asarray(_open(render_preview(data, limits="minmax")))
    assert pixels[-14:].max() == 0
    assert pixels[0, -1] == 255 and pixels[0, 0] == 0  # ramp limits unaffected


@pytest.mark.parametrize(
    "data",
    [np.full((10, 10), np.nan), np.full((10, 10), 7.0), np.zeros((8, 8), dtype=np.int32)],
    ids=["all-nan", "constant", "int-zeros"],
)
def test_degenerate_images_render(data: np.ndarray) -> None:
    image = _open(render_preview(data, stretch="log", limits="zscale"))
    assert image.size == (10, 10) or image.size == (8, 8)


def test_cube_collapses_to_a_plane_ignoring_empty_channels() -> None:
    cube = np.full((5, 12, 16), np.nan)
    cube[2] = _ramp(12, 16)
    image = _open(render_preview(cube[np.newaxis], limits="minmax"))
    assert image.size == (16, 12)
    assert np.asarray(image)[0, -1] == 255


def test_percentile_limits_clip_outliers() -> None:
    data = _ramp()
    data[30, 45] = 1e9
    with_outlier = np.asarray(_open(render_preview(data, limits=99.0)))
    assert with_outlier[0, 60] > 100  # the ramp is still visible


def test_real_image_renders(real_data) -> None:
    with fits.open(real_data / "fits" / "images" / "HorseHead.fits") as hdul:
        data = hdul[0].data
    image = _open(render_preview(data, stretch="asinh", limits=99.5, size=256, fmt="jpeg"))
    assert max(image.size) == 256
    assert 20 < np.asarray(image).mean() < 235


def test_options_parse_web_parameters() -> None:
    options = PreviewOptions.from_params(
        {"STRETCH": "Asinh", "limits": "99.5", "Invert": "true", "BINNING": "2", "SIZE": ""}
    )
    assert (options.stretch, options.limits, options.invert, options.binning, options.size) == (
        "asinh", 99.5, True, 2, None,
    )
    assert options.cache_key() == PreviewOptions(
        stretch="asinh", limits=99.5, invert=True, binning=2
    ).cache_key()
    assert _open(options.render(_ramp())).size == (45, 30)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"STRETCH": "cubic"}, "stretch must be one of linear, sqrt, log, asinh"),
        ({"LIMITS": "wide"}, "limits must be zscale, minmax or a percentile"),
        ({"LIMITS": "150"}, "percentile must be in (0, 100]"),
        ({"INVERT": "maybe"}, "INVERT must be true or false"),
        ({"BINNING": "two"}, "BINNING must be an integer"),
        ({"BINNING": "0"}, "binning must be between 1 and 64"),
        ({"SIZE": "-5"}, "size must be between 1 and 8192"),
        ({"FORMAT": "gif"}, "format must be png or jpeg"),
    ],
)
def test_bad_options_say_what_is_allowed(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as error:
        PreviewOptions.from_params(params)
    assert message in str(error.value)
