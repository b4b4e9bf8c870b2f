"""Many boxes from one tile-compressed 2-D image, each tile decompressed at most once.

The boxes of a batch are swept top to bottom (by first row). The image is decoded in
bands of whole tile rows (about BAND_BYTES each, at least one tile row); a band decodes
only the tiles some box of the batch touches, in tile-aligned rectangles (one
`CompImageHDU.section` call per rectangle), and is dropped as soon as the sweep has
passed below it. So every tile the batch needs is decompressed once, none it does not
need is decompressed, and memory holds only the bands under the current box. A box
taller than TALL_BYTES of full-width rows is read on its own (its tiles only).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from vo_service.engine.geometry import PixelBox
from vo_service.engine.reading import OpenImage

BAND_BYTES = 8 * 1024 * 1024  # decoded pixels of one band (at least one tile row)
TALL_BYTES = 64 * 1024 * 1024  # boxes spanning more full-width rows are read alone
MAX_TILES = 1 << 22  # a tile grid larger than this (tiny tiles) is read box by box


def read_boxes(image: OpenImage, wanted: Sequence[tuple[int, PixelBox]]
               ) -> Iterator[tuple[int, np.ndarray]]:
    """(index, raw big-endian pixels) of every (index, box) of a 2-D tile-compressed
    image (boxes inside the image), in sweep order (by first row)."""
    width, height = image.fits_shape[:2]
    tile_x, tile_y = (image.tile_shape or image.fits_shape)[:2]
    grid = (-(-height // tile_y), -(-width // tile_x))  # tile rows, tile columns
    row_bytes = width * image.dtype.itemsize
    if not wanted or (grid[0] + 1) * (grid[1] + 1) > MAX_TILES:
        for index, box in wanted:
            yield index, image.read(box)
        return
    band_rows = tile_y * max(1, BAND_BYTES // (tile_y * row_bytes))
    needed = needed_tiles([box for _, box in wanted], (tile_x, tile_y), grid)
    bands: dict[int, np.ndarray] = {}
    for index, box in sorted(wanted, key=lambda item: item[1].y0):
        if (box.y1 - box.y0) * row_bytes > TALL_BYTES:
            yield index, image.read(box)
            continue
        first, last = box.y0 // band_rows, (box.y1 - 1) // band_rows
        for passed in [number for number in bands if number < first]:
            del bands[passed]  # every later box starts at or below this box
        pieces = []
        for number in range(first, last + 1):
            band = bands.get(number)
            if band is None:
                band = bands[number] = _decode_band(image, number, band_rows, tile_y, tile_x,
                                                    needed)
            top = number * band_rows
            pieces.append(band[max(box.y0, top) - top:min(box.y1, top + band_rows) - top,
                               box.x0:box.x1])
        stamp = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        yield index, stamp.astype(image.dtype)  # one copy, swapped to big-endian


def needed_tiles(boxes: Sequence[PixelBox], tile: tuple[int, int], grid: tuple[int, int]
                 ) -> np.ndarray:
    """Boolean (tile row, tile column) grid of the tiles any box touches (vectorized:
    a 2-D difference array of the boxes' tile ranges, summed up)."""
    tile_x, tile_y = tile
    edges = np.array([(box.x0, box.x1, box.y0, box.y1) for box in boxes], dtype=np.int64)
    c0, c1 = edges[:, 0] // tile_x, (edges[:, 1] - 1) // tile_x + 1
    r0, r1 = edges[:, 2] // tile_y, (edges[:, 3] - 1) // tile_y + 1
    counts = np.zeros((grid[0] + 1, grid[1] + 1), dtype=np.int32)
    np.add.at(counts, (r0, c0), 1)
    np.add.at(counts, (r0, c1), -1)
    np.add.at(counts, (r1, c0), -1)
    np.add.at(counts, (r1, c1), 1)
    return counts.cumsum(axis=0).cumsum(axis=1)[:-1, :-1] > 0


def _decode_band(image: OpenImage, number: int, band_rows: int, tile_y: int, tile_x: int,
                 needed: np.ndarray) -> np.ndarray:
    """Rows of band `number` (native byte order) with every needed tile decoded; pixels
    of tiles no box needs are left unset."""
    width, height = image.fits_shape[:2]
    top, bottom = number * band_rows, min(height, (number + 1) * band_rows)
    first_tile_row = top // tile_y
    wanted = needed[first_tile_row:-(-bottom // tile_y)]
    if wanted.all():
        return image.decode(top, bottom, 0, width)
    band = np.empty((bottom - top, width), dtype=image.dtype.newbyteorder("="))
    for start, stop, columns in _row_groups(wanted):
        y0 = (first_tile_row + start) * tile_y
        y1 = min(bottom, (first_tile_row + stop) * tile_y)
        for left, right in _runs(columns):
            x0, x1 = left * tile_x, min(width, right * tile_x)
            band[y0 - top:y1 - top, x0:x1] = image.decode(y0, y1, x0, x1)
    return band


def _row_groups(wanted: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first, stop, columns) of consecutive tile rows needing the same tile columns."""
    changes = np.flatnonzero((wanted[1:] != wanted[:-1]).any(axis=1)) + 1
    bounds = [0, *changes.tolist(), len(wanted)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if wanted[start].any():
            yield start, stop, wanted[start]


def _runs(columns: np.ndarray) -> list[tuple[int, int]]:
    """(first, stop) of each run of True in a boolean row."""
    padded = np.concatenate(([False], columns, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(changes[::2].tolist(), changes[1::2].tolist(), strict=True))
