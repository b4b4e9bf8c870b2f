"""Tiles of a tile-compressed image decoded straight from the FITS heap.

`CompImageHDU.section` re-reads the table's descriptor columns and maps the heap anew on
every call, and dequantizes whole tiles; at 16,384 one-row tiles that Python overhead is
a third of the cost of decoding an image. A `TileHeap` reads the descriptors once, slices
each tile's bytes from one memory-mapped view of the heap and decodes them with astropy's
own codecs and dequantization (the same calls, in the same order, as astropy's
`decompress_image_data_section`), so the pixels are astropy's exactly. A RICE_1 tile can
be decoded up to its last needed pixel only (`prefix`, with imagecodecs' copy of the
same cfitsio decoder, which stops there; astropy's insists on the whole tile): the
codec decodes a tile front to back, so the pixels after the last one a batch needs are
never decoded.
"""

from __future__ import annotations

from math import prod

import numpy as np
from astropy.io import fits

try:  # astropy's tile codecs (astropy >= 6.0): the same decoding as CompImageHDU.section
    from astropy.io.fits.hdu.compressed import _tiled_compression as _astropy_tiles
    from astropy.io.fits.hdu.compressed._quantization import DITHER_METHODS, Quantize
except ImportError:  # pragma: no cover - another astropy layout: callers use .section
    _astropy_tiles = None

try:  # RICE_1 decoding that can stop after the first pixels of a tile
    from imagecodecs import rcomp_decode
except ImportError:  # pragma: no cover - whole tiles through astropy's codec then
    rcomp_decode = None

RICE = ("RICE_1", "RICE_ONE")
DIRECT_ALGORITHMS = (*RICE, "GZIP_1", "GZIP_2", "NOCOMPRESS", "PLIO_1", "HCOMPRESS_1")


class TileHeap:
    """The tiles of one 2-D tile-compressed image HDU (read-only, thread-safe: decoding
    only slices numpy arrays and calls codecs)."""

    def __init__(self, hdu: fits.CompImageHDU) -> None:
        bintable = hdu._bintable
        header = bintable.header
        self.header = header
        self.algorithm = str(header["ZCMPTYPE"])
        self.bitpix = int(header["ZBITPIX"])
        self.dtype = np.dtype(fits.BITPIX2DTYPE[self.bitpix])
        self.shape = (int(header["ZNAXIS2"]), int(header["ZNAXIS1"]))  # numpy order
        self.tile_shape = (int(header.get("ZTILE2", 1)), int(header.get("ZTILE1",
                                                                         self.shape[1])))
        self.columns = -(-self.shape[1] // self.tile_shape[1])  # tiles per tile row
        self._settings = _astropy_tiles._header_to_settings(header)
        self._heap = bintable._get_raw_data(int(header["PCOUNT"]), np.uint8,
                                            bintable._data_offset + bintable._theap)
        data = bintable.data
        names = data.dtype.names
        self._quantized = "ZSCALE" in names
        self._descriptors = np.array(data["COMPRESSED_DATA"])
        self._descriptor_dtype = _astropy_tiles._column_dtype(data._coldefs, "COMPRESSED_DATA")
        self._fallback = None
        for name in ("GZIP_COMPRESSED_DATA", "UNCOMPRESSED_DATA"):
            if name in names:
                self._fallback = (name, np.array(data[name]),
                                  _astropy_tiles._column_dtype(data._coldefs, name))
                break
        self._zblank = np.array(data["ZBLANK"]) if "ZBLANK" in names else None
        self._zscale = np.array(data["ZSCALE"]) if "ZSCALE" in names else None
        self._zzero = np.array(data["ZZERO"]) if "ZZERO" in names else None
        self._zblank_header = header.get("ZBLANK", hdu.header.get("BLANK", None))
        self._dither = DITHER_METHODS[header.get("ZQUANTIZ", "NO_DITHER")]
        self._dither_seed = header.get("ZDITHER0", 0)

    @staticmethod
    def supports(hdu: fits.CompImageHDU) -> bool:
        """Whether tiles of this HDU can be decoded here (else use `.section`)."""
        bintable = getattr(hdu, "_bintable", None)  # None for an HDU made in memory
        if _astropy_tiles is None or bintable is None:
            return False
        header = bintable.header
        return (header.get("ZNAXIS") == 2
                and header.get("ZCMPTYPE") in DIRECT_ALGORITHMS)

    def tile_bounds(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of a tile in the image (edge tiles are smaller)."""
        tile_y, tile_x = self.tile_shape
        return (row * tile_y, min(self.shape[0], (row + 1) * tile_y),
                column * tile_x, min(self.shape[1], (column + 1) * tile_x))

    def decode(self, row: int, column: int, prefix: int | None = None) -> np.ndarray:
        """The pixels of one tile (tile row, tile column), flat in row-major order, in
        native byte order: all of them, or (RICE_1) at least the first `prefix` (pixels
        from there on may be missing). Values come as astropy computes them before it
        casts them to the image's dtype (float64 for quantized floats): assigning them
        to an array of that dtype gives astropy's pixels."""
        number = row * self.columns + column
        if self._descriptors[number][0] == 0:
            y0, y1, x0, x1 = self.tile_bounds(row, column)
            return self._lossless(number, (y1 - y0, x1 - x0))
        return self._physical(number, self.integers(row, column, prefix))

    def integers(self, row: int, column: int, prefix: int | None = None) -> np.ndarray:
        """What the codec alone gives for one tile (quantized or raw integers, flat; at
        least the first `prefix` for RICE_1), before dequantization and blanks. Tiles
        stored losslessly beside quantized ones (empty COMPRESSED_DATA) give nothing."""
        y0, y1, x0, x1 = self.tile_bounds(row, column)
        shape = (y1 - y0, x1 - x0)
        number = row * self.columns + column
        if self._descriptors[number][0] == 0:
            return np.empty(0, dtype=np.int32)
        if prefix is not None and (self.algorithm not in RICE or prefix >= prod(shape)):
            prefix = None
        cdata = self._bytes(self._descriptors[number], self._descriptor_dtype)
        return self._decompress(cdata, shape, prefix)

    def _bytes(self, descriptor: np.ndarray, dtype: np.dtype) -> np.ndarray:
        size, offset = int(descriptor[0]), int(descriptor[1])
        data = self._heap[offset:offset + size * dtype.itemsize]
        return data.view(dtype) if dtype.itemsize > 1 else data

    def _decompress(self, cdata: np.ndarray, shape: tuple[int, int], prefix: int | None
                    ) -> np.ndarray:
        """Quantized or raw integer (or lossless) values of a tile, flat."""
        settings = _astropy_tiles._update_tile_settings(dict(self._settings),
                                                        self.algorithm, shape)
        if prefix is not None and rcomp_decode is not None and settings["bytepix"] in (2, 4):
            # the same cfitsio decoder as astropy's, stopping after `prefix` pixels
            return rcomp_decode(cdata, shape=(prefix,), dtype=f"=i{settings['bytepix']}",
                                nblock=settings["blocksize"])
        if self.algorithm == "GZIP_2":
            # as astropy: the element size follows from the decompressed length
            plain = np.asarray(_astropy_tiles._decompress_tile(cdata, algorithm="GZIP_1"))
            settings["itemsize"] = plain.size // prod(shape)
        buffer = _astropy_tiles._decompress_tile(cdata, algorithm=self.algorithm, **settings)
        return _astropy_tiles._finalize_array(
            buffer, bitpix=self.bitpix, tile_shape=shape, algorithm=self.algorithm,
            lossless=not self._quantized).reshape(-1)

    def _lossless(self, number: int, shape: tuple[int, int]) -> np.ndarray:
        """A tile stored losslessly beside the quantized ones (GZIP_COMPRESSED_DATA or
        UNCOMPRESSED_DATA), as astropy reads it."""
        if self._fallback is None:
            raise ValueError("COMPRESSED_DATA column has zero length but neither "
                             "GZIP_COMPRESSED_DATA nor UNCOMPRESSED_DATA column exists")
        name, descriptors, dtype = self._fallback
        data = self._bytes(descriptors[number], dtype)
        if name == "UNCOMPRESSED_DATA":
            return data.reshape(-1)
        buffer = _astropy_tiles._decompress_tile(data, algorithm="GZIP_1")
        return _astropy_tiles._finalize_array(buffer, bitpix=self.bitpix, tile_shape=shape,
                                              algorithm="GZIP_1", lossless=True).reshape(-1)

    def _physical(self, number: int, values: np.ndarray) -> np.ndarray:
        """Dequantized values with blanks restored, as astropy's section gives them."""
        zblank = self._zblank_header if self._zblank is None else self._zblank[number]
        blank_mask = values == zblank if zblank is not None else None
        if self._quantized and self._dither == -1:  # as astropy: float64, no dither
            values = values * self._zscale[number] + self._zzero[number]
        elif self._quantized:
            quantize = Quantize(row=number + self._dither_seed, dither_method=self._dither,
                                quantize_level=None, bitpix=self.bitpix)
            values = np.asarray(quantize.decode_quantized(
                values, self._zscale[number], self._zzero[number]))
        if blank_mask is not None:
            if not values.flags.writeable:
                values = values.copy()
            values[blank_mask] = self._zblank_header if self.bitpix > 0 else np.nan
        return values

