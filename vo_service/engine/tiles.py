"""Many boxes from one tile-compressed 2-D image, each tile decompressed at most once.

The boxes of a batch are swept top to bottom (by first row). The image is decoded in
bands of whole tile rows (about BAND_BYTES each, at least one tile row); a band decodes
only the tiles some box of the batch touches, and is dropped as soon as the sweep has
passed below it. So every tile the batch needs is decompressed once, none it does not
need is decompressed, and memory holds only the bands under the current box plus a few
decoded ahead by DECODE_THREADS threads. A box taller than TALL_BYTES of full-width rows
is read on its own (its tiles only).

Tiles are decoded one by one from the heap (`engine.tile_heap`), each only up to the
last pixel a box needs where the codec allows it (RICE_1, tiles in row-major order);
images whose codec or layout the heap reader does not know are decoded with
`CompImageHDU.section`, in tile-aligned rectangles.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from vo_service.engine.geometry import PixelBox
from vo_service.engine.reading import OpenImage
from vo_service.engine.tile_heap import TileHeap

BAND_BYTES = 8 * 1024 * 1024  # decoded pixels of one band (at least one tile row)
TALL_BYTES = 64 * 1024 * 1024  # boxes spanning more full-width rows are read alone
MAX_TILES = 1 << 22  # a tile grid larger than this (tiny tiles) is read box by box
DECODE_THREADS = min(2, os.cpu_count() or 1)  # 1 in pool workers (one per core already)
MIN_THREADED_BANDS = 3  # fewer bands are decoded in the calling thread


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
    swept = []
    for index, box in sorted(wanted, key=lambda item: item[1].y0):
        if (box.y1 - box.y0) * row_bytes > TALL_BYTES:
            yield index, image.read(box)  # before any decoding thread uses the file
        else:
            swept.append((index, box))
    if not swept:
        return
    boxes = [box for _, box in swept]
    numbers = sorted({number for box in boxes
                      for number in range(box.y0 // band_rows, (box.y1 - 1) // band_rows + 1)})
    heap = image.tile_heap
    if heap is not None:
        reach = tile_reach(boxes, (tile_x, tile_y), grid, (height, width))

        def decode(opened: OpenImage | None, number: int) -> np.ndarray:
            return _decode_band_tiles(heap, number, band_rows, reach)
    else:
        needed = needed_tiles(boxes, (tile_x, tile_y), grid)

        def decode(opened: OpenImage | None, number: int) -> np.ndarray:
            return _decode_band(opened, number, band_rows, tile_y, tile_x, needed)

    source = _Bands(image, numbers, decode, own_images=heap is None)
    bands: dict[int, np.ndarray] = {}
    dtype = image.dtype  # read from the header: once, not per stamp
    try:
        for index, box in swept:
            first, last = box.y0 // band_rows, (box.y1 - 1) // band_rows
            for passed in [number for number in bands if number < first]:
                del bands[passed]  # every later box starts at or below this box
            pieces = []
            for number in range(first, last + 1):
                band = bands.get(number)
                if band is None:
                    band = bands[number] = source.get(number)
                top = number * band_rows
                pieces.append(band[max(box.y0, top) - top:min(box.y1, top + band_rows) - top,
                                   box.x0:box.x1])
            stamp = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            yield index, stamp.astype(dtype)  # one copy, swapped to big-endian
    finally:
        source.close()


class _Bands:
    """Decoded bands, asked for in ascending order. With DECODE_THREADS > 1 the next
    bands are decoded ahead by threads (the codecs release the GIL); with `own_images`
    each thread decodes from its own opened copy of the image, as astropy HDUs are not
    thread-safe (a `TileHeap` is); at most DECODE_THREADS + 1 bands wait decoded ahead."""

    def __init__(self, image: OpenImage, numbers: list[int],
                 decode: Callable[[OpenImage, int], np.ndarray], own_images: bool) -> None:
        self._image = image
        self._own_images = own_images
        self._numbers = numbers
        self._position = {number: position for position, number in enumerate(numbers)}
        self._decode = decode
        self._submitted = 0
        self._futures: dict[int, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._opened: list[OpenImage] = []
        self._lock = threading.Lock()
        if DECODE_THREADS > 1 and len(numbers) >= MIN_THREADED_BANDS:
            self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="tiles")

    def get(self, number: int) -> np.ndarray:
        if self._pool is None:
            return self._decode(self._image, number)
        ahead = min(len(self._numbers), self._position[number] + DECODE_THREADS + 2)
        while self._submitted < ahead:
            upcoming = self._numbers[self._submitted]
            self._futures[upcoming] = self._pool.submit(self._decode_here, upcoming)
            self._submitted += 1
        return self._futures.pop(number).result()

    def _decode_here(self, number: int) -> np.ndarray:
        if not self._own_images:
            return self._decode(self._image, number)
        opened = getattr(self._local, "image", None)
        if opened is None:
            opened = self._local.image = OpenImage(self._image.path, self._image.hdu_index)
            with self._lock:
                self._opened.append(opened)
        return self._decode(opened, number)

    def close(self) -> None:
        if self._pool is not None:
            for future in self._futures.values():
                future.cancel()
            self._pool.shutdown(wait=True)
        for opened in self._opened:
            opened.close()


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


def tile_reach(boxes: Sequence[PixelBox], tile: tuple[int, int], grid: tuple[int, int],
               shape: tuple[int, int]) -> np.ndarray:
    """(tile row, tile column) grid of how many leading pixels (row-major within the
    tile) of each tile some box needs: 0 for tiles no box touches, at most the tile's
    size. A box needs a constant count over at most four rectangles of tiles (whole
    tiles; its last tile column; its last tile row; its last tile), so the grid is
    filled by slice assignments in increasing count (the largest wins), with memory
    independent of the boxes' sizes."""
    tile_x, tile_y = tile
    width = shape[1]
    rectangles: list[tuple[int, int, int, int, int]] = []  # (count, r0, r1, c0, c1)
    for box in boxes:
        r0, r1 = box.y0 // tile_y, (box.y1 - 1) // tile_y
        c0, c1 = box.x0 // tile_x, (box.x1 - 1) // tile_x
        rows_in_last = box.y1 - r1 * tile_y  # rows of the last tile row, from its top
        last_width = min(width, (c1 + 1) * tile_x) - c1 * tile_x
        end_x = box.x1 - c1 * tile_x  # columns of the last tile column, from its left
        if r1 > r0:
            if c1 > c0:
                rectangles.append((tile_x * tile_y, r0, r1, c0, c1))
            rectangles.append(((tile_y - 1) * last_width + end_x, r0, r1, c1, c1 + 1))
        if c1 > c0:
            rectangles.append((rows_in_last * tile_x, r1, r1 + 1, c0, c1))
        rectangles.append(((rows_in_last - 1) * last_width + end_x, r1, r1 + 1, c1, c1 + 1))
    reach = np.zeros(grid, dtype=np.int64)
    for count, r0, r1, c0, c1 in sorted(rectangles):
        reach[r0:r1, c0:c1] = count
    return reach


def _decode_band_tiles(heap: TileHeap, number: int, band_rows: int, reach: np.ndarray
                       ) -> np.ndarray:
    """Rows of band `number` (native byte order) with the needed leading pixels of every
    needed tile decoded (`reach`); other pixels are left unset."""
    height, width = heap.shape
    tile_y = heap.tile_shape[0]
    top, bottom = number * band_rows, min(height, (number + 1) * band_rows)
    band = np.empty((bottom - top, width), dtype=heap.dtype)
    first = top // tile_y
    rows, columns = np.nonzero(reach[first:-(-bottom // tile_y)])
    for row, column in zip((rows + first).tolist(), columns.tolist(), strict=True):
        y0, y1, x0, x1 = heap.tile_bounds(row, column)
        count = int(reach[row, column])
        pixels = heap.decode(row, column, count)
        tile_width = x1 - x0
        whole, rest = divmod(count, tile_width)
        if whole:
            band[y0 - top:y0 - top + whole, x0:x1] = pixels[:whole * tile_width].reshape(
                whole, tile_width)
        if rest:
            band[y0 - top + whole, x0:x0 + rest] = pixels[whole * tile_width:count]
    return band


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
