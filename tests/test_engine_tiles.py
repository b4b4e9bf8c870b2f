"""Tile-compressed images in batches: every stamp equals the plain image's pixels, and each
tile a batch touches is decompressed once (none it does not touch)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import FITSFixedWarning

from tests import fits_factory
from tests.test_engine_batch import targets_on
from vo_service.engine import tiles
from vo_service.engine.batch import cut_many, iter_cutouts
from vo_service.engine.geometry import PixelBox
from vo_service.engine.reading import OpenImage
from vo_service.engine.tile_heap import TileHeap
from vo_service.shapes import CenterSize

warnings.simplefilter("ignore", FITSFixedWarning)

TILE_SHAPES = {"rows": None, "squares": (32, 32), "odd": (25, 48)}  # numpy order (y, x)


@pytest.fixture(params=sorted(TILE_SHAPES))
def images(request, tmp_path):
    plain = fits_factory.sip_image(tmp_path / "plain.fits")
    packed = fits_factory.compressed_copy(plain, tmp_path / f"{request.param}.fits",
                                          tile_shape=TILE_SHAPES[request.param])
    return plain, packed


def decoded_tiles(monkeypatch) -> list[tuple[int, int, int, int]]:
    """Record every rectangle the engine decompresses (y0, y1, x0, x1): whole tiles read
    from the heap, or rectangles read through astropy's section."""
    calls: list[tuple[int, int, int, int]] = []
    original_section, original_tile = OpenImage.decode, TileHeap.decode

    def recording_section(self, y0, y1, x0, x1):
        calls.append((y0, y1, x0, x1))
        return original_section(self, y0, y1, x0, x1)

    def recording_tile(self, row, column, prefix=None):
        calls.append(self.tile_bounds(row, column))
        return original_tile(self, row, column, prefix)

    monkeypatch.setattr(OpenImage, "decode", recording_section)
    monkeypatch.setattr(TileHeap, "decode", recording_tile)
    return calls


def tile_counts(calls, tile_shape, shape) -> np.ndarray:
    """How often each tile (tile row, tile column) was decompressed."""
    tile_x, tile_y = tile_shape
    counts = np.zeros((-(-shape[1] // tile_y), -(-shape[0] // tile_x)), dtype=int)
    for y0, y1, x0, x1 in calls:
        assert y0 % tile_y == 0 and x0 % tile_x == 0  # whole tiles only
        counts[y0 // tile_y:-(-y1 // tile_y), x0 // tile_x:-(-x1 // tile_x)] += 1
    return counts


def touched(boxes, tile_shape, shape) -> np.ndarray:
    tile_x, tile_y = tile_shape
    grid = np.zeros((-(-shape[1] // tile_y), -(-shape[0] // tile_x)), dtype=bool)
    for box in boxes:
        grid[box.y0 // tile_y:(box.y1 - 1) // tile_y + 1,
             box.x0 // tile_x:(box.x1 - 1) // tile_x + 1] = True
    return grid


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_stamps_equal_the_plain_image_and_each_tile_decodes_once(images, monkeypatch,
                                                                        threads):
    plain, packed = images
    monkeypatch.setattr(tiles, "DECODE_THREADS", threads)
    monkeypatch.setattr(tiles, "BAND_BYTES", 200 * 4 * 20)  # bands of about 20 rows
    regions = targets_on(plain, 90, seed=11)  # partial stamps at the edges included
    calls = decoded_tiles(monkeypatch)
    with OpenImage(packed, 1) as image:
        results = sorted(iter_cutouts(image, regions, pad=True), key=lambda r: r.index)
        tile_shape, shape = image.tile_shape, image.fits_shape
    expected = cut_many(plain, 0, regions, pad=True)
    assert sum(result.has_stamp for result in results) > 60
    for result, reference in zip(results, expected, strict=True):
        assert result.status == reference.status and result.pixel_box == reference.pixel_box
        if result.has_stamp:
            assert result.data.dtype == np.dtype(">f4")
            assert np.array_equal(result.data, reference.data, equal_nan=True)
    counts = tile_counts(calls, tile_shape, shape)
    boxes = [result.pixel_box.clip(shape) for result in results if result.has_stamp]
    assert counts.max() == 1
    assert np.array_equal(counts == 1, touched(boxes, tile_shape, shape))


def test_a_few_stamps_decode_only_the_tiles_they_touch(tmp_path, monkeypatch):
    plain = fits_factory.sip_image(tmp_path / "plain.fits")
    packed = fits_factory.compressed_copy(plain, tmp_path / "squares.fits", tile_shape=(32, 32))
    calls = decoded_tiles(monkeypatch)
    boxes = [PixelBox(((5, 20), (3, 12))), PixelBox(((150, 190), (100, 140))),
             PixelBox(((10, 30), (5, 9)))]
    with OpenImage(packed, 1) as image:
        stamps = dict(tiles.read_boxes(image, list(enumerate(boxes))))
    raw = fits.getdata(plain)
    for index, box in enumerate(boxes):
        assert np.array_equal(stamps[index], raw[box.slices()])
    counts = tile_counts(calls, (32, 32), (200, 160))
    assert np.array_equal(counts, touched(boxes, (32, 32), (200, 160)).astype(int))
    assert counts.sum() == 1 + 4  # of 35 tiles


def test_tall_boxes_are_read_on_their_own(tmp_path, monkeypatch):
    plain = fits_factory.sip_image(tmp_path / "plain.fits")
    packed = fits_factory.compressed_copy(plain, tmp_path / "rows.fits")
    monkeypatch.setattr(tiles, "TALL_BYTES", 200 * 4 * 50)  # 50 full-width rows
    monkeypatch.setattr(tiles, "BAND_BYTES", 200 * 4 * 16)  # bands of 16 rows
    boxes = [PixelBox(((0, 200), (0, 160))), PixelBox(((40, 60), (30, 70))),
             PixelBox(((0, 10), (150, 160)))]
    with OpenImage(packed, 1) as image:
        stamps = dict(tiles.read_boxes(image, list(enumerate(boxes))))
    raw = fits.getdata(plain)
    for index, box in enumerate(boxes):
        assert np.array_equal(stamps[index], raw[box.slices()])


def test_needed_tiles_is_the_union_of_the_boxes_tiles():
    rng = np.random.default_rng(4)
    boxes = []
    for _ in range(40):
        x0, y0 = rng.integers(0, 190), rng.integers(0, 150)
        boxes.append(PixelBox(((int(x0), int(x0 + rng.integers(1, 60))),
                               (int(y0), int(y0 + rng.integers(1, 40))))))
    boxes = [box.clip((200, 160)) for box in boxes]
    needed = tiles.needed_tiles(boxes, (25, 16), (10, 8))
    assert np.array_equal(needed, touched(boxes, (25, 16), (200, 160)))


def test_scaled_integer_tiles_keep_raw_values(tmp_path):
    plain = fits_factory.scaled_int_image(tmp_path / "int.fits")
    packed = tmp_path / "int_packed.fits"
    with fits.open(plain, do_not_scale_image_data=True) as hdus:
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(
            data=hdus[0].data, header=hdus[0].header, compression_type="RICE_1",
            tile_shape=(16, 40), do_not_scale_image_data=True)]).writeto(packed)
    regions = [CenterSize(r.ra, r.dec, 17, 13) for r in targets_on(plain, 30, seed=2)]
    packed_results = cut_many(packed, 1, regions)
    for result, reference in zip(packed_results, cut_many(plain, 0, regions), strict=True):
        if reference.has_stamp:
            assert result.data.dtype == np.dtype(">i2")
            assert np.array_equal(result.data, reference.data)
