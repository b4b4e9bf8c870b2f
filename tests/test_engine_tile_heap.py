"""Tiles decoded straight from the heap (engine.tile_heap) give astropy's own pixels, for
every codec, quantization and blank convention, whole tiles or RICE prefixes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from astropy.io import fits

from vo_service.engine import tile_heap, tiles
from vo_service.engine.geometry import PixelBox
from vo_service.engine.reading import OpenImage

SHAPE = (70, 53)  # numpy order (rows, columns): no tile shape below divides it


def float_image(rng: np.random.Generator) -> np.ndarray:
    """Noise with NaNs, exact zeros and a constant block (whose tiles cannot be quantized
    and are stored losslessly beside the others)."""
    data = (100 + 3 * rng.standard_normal(SHAPE)).astype(np.float32)
    data[rng.random(SHAPE) < 0.03] = np.nan
    data[rng.random(SHAPE) < 0.03] = 0.0
    data[40:50] = 7.25
    return data


def int_image(rng: np.random.Generator, dtype: str, blank: int | None) -> np.ndarray:
    data = rng.integers(0, 5000, SHAPE).astype(dtype)
    if blank is not None:
        data[rng.random(SHAPE) < 0.05] = blank
    return data


# name: (data kind, CompImageHDU options, header cards)
CASES = {
    "rice-float-dither1": ("float", {"compression_type": "RICE_1",
                                     "quantize_method": 1, "dither_seed": 17}, {}),
    "rice-float-dither2": ("float", {"compression_type": "RICE_1",
                                     "quantize_method": 2, "dither_seed": 5}, {}),
    "rice-float-no-dither": ("float", {"compression_type": "RICE_1",
                                       "quantize_method": -1}, {}),
    "rice-float-square-tiles": ("float", {"compression_type": "RICE_1",
                                          "tile_shape": (16, 16), "dither_seed": 3}, {}),
    "rice-float-odd-tiles": ("float", {"compression_type": "RICE_1",
                                       "tile_shape": (25, 48), "dither_seed": 9}, {}),
    "rice-float-3-row-tiles": ("float", {"compression_type": "RICE_1",
                                         "tile_shape": (3, 53), "dither_seed": 2}, {}),
    "rice-int16-blank": ("int16", {"compression_type": "RICE_1"}, {"BLANK": -32768}),
    "rice-int32-blank": ("int32", {"compression_type": "RICE_1", "tile_shape": (7, 20)},
                         {"BLANK": -999}),
    "rice-uint8": ("uint8", {"compression_type": "RICE_1"}, {}),
    "rice-uint16-bzero": ("uint16", {"compression_type": "RICE_1"}, {}),  # BZERO = 32768
    "gzip1-float-quantized": ("float", {"compression_type": "GZIP_1", "dither_seed": 4}, {}),
    "gzip1-float-lossless": ("float", {"compression_type": "GZIP_1", "quantize_level": 0.0},
                             {}),
    "gzip2-int16": ("int16", {"compression_type": "GZIP_2", "tile_shape": (10, 53)}, {}),
    "gzip2-float-lossless": ("float", {"compression_type": "GZIP_2", "quantize_level": 0.0,
                                       "tile_shape": (10, 30)}, {}),
    "hcompress-int32": ("int32", {"compression_type": "HCOMPRESS_1",
                                  "tile_shape": (16, 24)}, {}),
    "hcompress-float": ("float", {"compression_type": "HCOMPRESS_1", "tile_shape": (16, 24),
                                  "dither_seed": 8}, {}),
    "plio-int16": ("int16", {"compression_type": "PLIO_1"}, {}),
}


@pytest.fixture(params=sorted(CASES))
def packed(request, tmp_path):
    kind, options, cards = CASES[request.param]
    rng = np.random.default_rng(zlib.crc32(request.param.encode()))
    data = float_image(rng) if kind == "float" else int_image(rng, kind, cards.get("BLANK"))
    hdu = fits.CompImageHDU(data=data, header=fits.Header(cards), **options)
    path = tmp_path / f"{request.param}.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


def astropy_pixels(path) -> np.ndarray:
    """The image as astropy decompresses it, opened as the engine opens it."""
    with fits.open(path, do_not_scale_image_data=True) as hdus:
        return np.array(hdus[1].section[...])


def boxes_over(shape: tuple[int, int], rng: np.random.Generator) -> list[PixelBox]:
    """Boxes covering the whole image (edges included) and random ones overlapping."""
    height, width = shape
    boxes = [PixelBox(((x, min(width, x + 11)), (y, min(height, y + 9))))
             for y in range(0, height, 9) for x in range(0, width, 11)]
    for _ in range(30):
        x0, y0 = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
        boxes.append(PixelBox(((x0, int(rng.integers(x0 + 1, width + 1))),
                               (y0, int(rng.integers(y0 + 1, min(height, y0 + 20) + 1))))))
    return boxes


def assert_same_pixels(stamp: np.ndarray, expected: np.ndarray) -> None:
    assert stamp.dtype.newbyteorder("=") == expected.dtype
    native = stamp.astype(expected.dtype)
    if expected.dtype.kind == "f":
        assert np.array_equal(np.isnan(native), np.isnan(expected))
    assert np.array_equal(native, expected, equal_nan=True)


@pytest.mark.parametrize("prefix_decoder", ["imagecodecs", "astropy"])
def test_batch_stamps_are_astropys_pixels(packed, monkeypatch, prefix_decoder):
    if prefix_decoder == "astropy":  # whole RICE tiles through astropy's own codec
        monkeypatch.setattr(tile_heap, "rcomp_decode", None)
    expected = astropy_pixels(packed)
    boxes = boxes_over(expected.shape, np.random.default_rng(2))
    with OpenImage(packed, 1) as image:
        assert image.tile_heap is not None  # read from the heap, not through .section
        stamps = dict(tiles.read_boxes(image, list(enumerate(boxes))))
    assert len(stamps) == len(boxes)
    for index, box in enumerate(boxes):
        assert_same_pixels(stamps[index], expected[box.slices()])


def test_the_float_images_hold_what_the_cases_claim(tmp_path):
    """The cases above reach the rare paths: blanks, lossless tiles, both dithers."""
    data = float_image(np.random.default_rng(1))
    path = tmp_path / "dither2.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
        data=data, compression_type="RICE_1", quantize_method=2)]).writeto(path)
    with fits.open(path, disable_image_compression=True) as hdus:
        table = hdus[1]
        assert table.header["ZQUANTIZ"] == "SUBTRACTIVE_DITHER_2"
        assert "ZBLANK" in table.header or "ZBLANK" in table.columns.names
        lossless = [len(tile) for tile in table.data["GZIP_COMPRESSED_DATA"]]
        quantized = [len(tile) for tile in table.data["COMPRESSED_DATA"]]
        assert 0 < lossless.count(0) < len(lossless)  # the constant rows are lossless
        assert all((q == 0) != (g == 0) for q, g in zip(quantized, lossless, strict=True))
    pixels = astropy_pixels(path)
    assert np.isnan(pixels).any() and (pixels == 0).any()


def test_rice_row_tiles_are_decoded_only_up_to_the_last_needed_pixel(tmp_path, monkeypatch):
    data = float_image(np.random.default_rng(3))
    path = tmp_path / "rows.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data=data, compression_type="RICE_1")]
                 ).writeto(path)
    lengths: list[int] = []
    original = tile_heap.rcomp_decode

    def recording(data, shape, **options):
        lengths.append(shape[0])
        return original(data, shape=shape, **options)

    monkeypatch.setattr(tile_heap, "rcomp_decode", recording)
    boxes = [PixelBox(((2, 12), (5, 15))), PixelBox(((8, 20), (10, 18)))]
    with OpenImage(path, 1) as image:
        stamps = dict(tiles.read_boxes(image, list(enumerate(boxes))))
    expected = astropy_pixels(path)
    for index, box in enumerate(boxes):
        assert_same_pixels(stamps[index], expected[box.slices()])
    # rows 5-9 need 12 pixels, rows 10-14 20, rows 15-17 20; no other row is decoded
    assert lengths == [12] * 5 + [20] * 8


def test_tile_reach_counts_the_leading_pixels_each_tile_needs():
    boxes = [PixelBox(((2, 12), (5, 15))), PixelBox(((30, 40), (0, 4)))]
    reach = tiles.tile_reach(boxes, (16, 8), (2, 3), (16, 45))
    # tile (0, 0): rows 0-7, columns 0-15; the first box needs rows 5-7 up to column 12
    assert reach[0, 0] == 7 * 16 + 12
    assert reach[1, 0] == 6 * 16 + 12  # rows 8-14 of tile rows 8-15
    assert reach[0, 1] == 3 * 16 + 16  # the second box: columns 30-31 of rows 0-3
    assert reach[0, 2] == 3 * 13 + 8  # the edge tile is 13 wide; columns 32-39
    assert reach[1, 1] == 0 and reach[1, 2] == 0


@pytest.mark.parametrize("tile", [(53, 1), (16, 8), (25, 48), (7, 3), (60, 80)])
def test_tile_reach_is_the_last_needed_pixel_of_every_tile(tile):
    """Against a pixel-by-pixel count: the last pixel (row-major in the tile) any box
    covers, plus one, for random boxes over an image no tile shape divides."""
    height, width = SHAPE
    tile_x, tile_y = tile
    grid = (-(-height // tile_y), -(-width // tile_x))
    rng = np.random.default_rng(tile_x * 100 + tile_y)
    boxes = boxes_over(SHAPE, rng)[-30:]
    covered = np.zeros(SHAPE, dtype=bool)
    expected = np.zeros(grid, dtype=np.int64)
    for box in boxes:
        covered[box.slices()] = True
    for row in range(grid[0]):
        for column in range(grid[1]):
            block = covered[row * tile_y:(row + 1) * tile_y, column * tile_x:(column + 1) * tile_x]
            flat = np.flatnonzero(block.reshape(-1))
            expected[row, column] = flat[-1] + 1 if len(flat) else 0
    assert np.array_equal(tiles.tile_reach(boxes, tile, grid, SHAPE), expected)
