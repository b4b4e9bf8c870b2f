"""Stamps across tile boundaries: one stamp on the pixel grid of one tile (the *grid
image*), its part outside that tile filled from the neighbouring tiles.

For every region whose stamp leaves the grid image:

- the pixels the grid image has come from it, unchanged (the stamp agrees with a plain
  cutout wherever it can);
- every other pixel comes from one neighbour: of the neighbours that cover it, the one
  whose centre is nearest to the pixel (the tile in which the pixel lies deepest: the
  usual rule of tract/patch tilings, and the tile whose data are usually best there);
- a neighbour on the same pixel grid (`engine.grids`) gives its pixels by exact copy; any
  other is resampled with ``reproject`` (`engine.resample`: ``interp`` or ``flux``);
- the stamp records, per pixel, where it came from: a ``SRCMAP`` image extension of int16,
  0 = no image covers the pixel, +n = copied from image n, -n = resampled from image n,
  with the images listed in the stamp header as ``SRCIMGn`` (1 is the grid image).

When every contributing image holds the same kind of pixels (the same BITPIX, BSCALE,
BZERO), the stamp keeps them raw, so copied pixels are bit for bit those of the files;
otherwise it holds physical values (float, BLANK as NaN). Pixels no image covers are NaN
(floats) or BLANK (integers).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.coordinates import ICRS, SkyCoord

from vo_service.engine.batch import iter_cutouts
from vo_service.engine.cutout import (
    CutoutResult,
    Plan,
    describe_region,
    make_template,
    plan_cutouts,
)
from vo_service.engine.grids import box_wcs, offset_holds, shared_grid_offset
from vo_service.engine.physical import physical_values
from vo_service.engine.reading import OpenImage
from vo_service.engine.resample import DEFAULT_METHOD, MARGIN, METHODS, NEAREST, resample
from vo_service.engine.writing import (
    BLANK_FOR_BITPIX,
    BLOCK,
    card,
    data_padding,
    dtype_bitpix,
    history_cards,
)
from vo_service.shapes import Shape

STITCHED = "stitched"
SOURCE_MAP_EXTNAME = "SRCMAP"
COPIED, RESAMPLED = "copy", "resample"


@dataclass(frozen=True)
class Tile:
    """An open image offered to a stitched stamp, with the name its header gives it (a
    publisher DID, or a file name)."""

    image: OpenImage
    label: str


@dataclass(frozen=True)
class Contribution:
    """One image that gave pixels to a stitched stamp."""

    label: str
    how: str  # COPIED or RESAMPLED ('copy' for the grid image itself)
    pixels: int


@dataclass(eq=False)
class StitchedResult(CutoutResult):
    """A stamp filled from several images: a CutoutResult with the source map and the list
    of contributing images, written as header cards and a SRCMAP extension."""

    contributions: list[Contribution] = field(default_factory=list)
    source_map: np.ndarray | None = field(default=None, repr=False)
    method: str = DEFAULT_METHOD

    @property
    def labels(self) -> list[str]:
        """The contributing images, grid image first."""
        return [contribution.label for contribution in self.contributions]

    def header_bytes(self, *, primary: bool = True, extver_offset: int = 0,
                     extname: str | None = None) -> bytes:
        rendered = super().header_bytes(primary=primary, extver_offset=extver_offset,
                                        extname=extname)
        return _insert_cards(rendered, self._cards(extname))

    def _cards(self, extname: str | None) -> str:
        cards = [card("STITCHED", True, "pixels from several images, see SRCMAP"),
                 card("STITCHMD", self.method, "how others were resampled: interp or flux"),
                 card("SRCMAP", _map_name(extname), "extension: source of each pixel"),
                 card("NSRCIMG", len(self.contributions), "images that gave pixels")]
        for number, contribution in enumerate(self.contributions, start=1):
            cards.append(card(f"SRCIMG{number}", contribution.label, "source image"))
            cards.append(card(f"SRCHOW{number}", contribution.how,
                              "grid image, copy or resample"))
            cards.append(card(f"SRCPIX{number}", contribution.pixels, "pixels it gave"))
        cards.append(history_cards(
            "Stitched: pixels outside the grid image (SRCIMG1) come from the covering "
            "image whose centre is nearest; SRCMAP: 0 none, +n copied from SRCIMGn, -n "
            "resampled from it"))
        return "".join(cards)

    def chunks(self, *, primary: bool = True, extver_offset: int = 0,
               extname: str | None = None) -> list[bytes | memoryview]:
        parts = super().chunks(primary=primary, extver_offset=extver_offset, extname=extname)
        parts.append(self._source_map_bytes(extname))
        return parts

    def _source_map_bytes(self, extname: str | None) -> bytes:
        """The SRCMAP image extension, with the stamp's celestial WCS."""
        assert self.source_map is not None and self.template is not None
        rendered = self.template.render(self.pixel_box.ranges[:2], primary=False).decode(
            "ascii")
        wcs_cards = [rendered[start:start + 80] for start in range(0, len(rendered), 80)
                     if _is_wcs_keyword(rendered[start:start + 8].rstrip())]
        text = (card("XTENSION", "IMAGE") + card("BITPIX", 16) + card("NAXIS", 2)
                + card("NAXIS1", self.source_map.shape[1])
                + card("NAXIS2", self.source_map.shape[0])
                + card("PCOUNT", 0) + card("GCOUNT", 1)
                + card("EXTNAME", _map_name(extname))
                + "".join(wcs_cards)
                + history_cards("0 = no image, +n = copied from SRCIMGn of the image "
                                "header, -n = resampled from SRCIMGn")
                + f"{'END':<80}")
        text += " " * (-len(text) % BLOCK)
        data = self.source_map.astype(">i2").tobytes()
        return text.encode("ascii") + data + data_padding(len(data))


def _map_name(extname: str | None) -> str:
    return f"{extname}_{SOURCE_MAP_EXTNAME}" if extname else SOURCE_MAP_EXTNAME


def _is_wcs_keyword(keyword: str) -> bool:
    return keyword.startswith(("CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT", "CD1_", "CD2_",
                               "PC1_", "PC2_", "A_", "B_", "AP_", "BP_", "RADESYS",
                               "EQUINOX", "LONPOLE", "LATPOLE", "WCSAXES"))


def _insert_cards(header: bytes, cards: str) -> bytes:
    """``cards`` placed before the END card of a rendered header (padding redone)."""
    text = header.decode("ascii")
    for start in range(0, len(text), 80):
        if text[start:start + 8] == "END     ":
            body = text[:start] + cards + text[start:start + 80]
            return (body + " " * (-len(body) % BLOCK)).encode("ascii")
    raise ValueError("a rendered header without END")


def stitch_cutouts(grid: Tile, neighbours: Sequence[Tile], regions: Sequence[Shape], *,
                   method: str = DEFAULT_METHOD, max_pixels: int | None = None,
                   origfile: str | None = None, pad: bool = False,
                   **filters: object) -> list[CutoutResult]:
    """Cut every region from ``grid``; a stamp that leaves the grid image is filled from
    ``neighbours`` (status ``stitched``, a StitchedResult) when any of them covers part of
    the rest. Results in input order; the others are what `iter_cutouts` gives.

    ``method``: how neighbours that are not on the grid image's pixel grid are resampled,
    ``interp`` (bilinear, the default) or ``flux`` (flux-conserving).
    ``pad`` pads a stamp no neighbour helps to fill, as `iter_cutouts` does; ``filters``
    (band, time, pol) are checked as `iter_cutouts` checks them.
    Raises CutoutError when the grid image cannot answer at all, ValueError for an
    unknown method.
    """
    return sorted(iter_stitched(grid, neighbours, regions, method=method,
                                max_pixels=max_pixels, origfile=origfile, pad=pad, **filters),
                  key=lambda result: result.index)


def iter_stitched(grid: Tile, neighbours: Sequence[Tile], regions: Sequence[Shape], *,
                  method: str = DEFAULT_METHOD, max_pixels: int | None = None,
                  origfile: str | None = None, pad: bool = False,
                  **filters: object) -> Iterator[CutoutResult]:
    """`stitch_cutouts` one result at a time (each with ``.index``, its position in
    ``regions``), in the order they are made: memory holds one stamp, however many
    regions."""
    if method not in METHODS:
        raise ValueError(f"unknown stitching method {method!r}; use one of "
                         + ", ".join(METHODS))
    regions = list(regions)
    if not regions:
        return
    padded = None  # the whole box of every region, planned at once
    if neighbours and len(grid.image.fits_shape) == 2:
        padded = plan_cutouts(grid.image, regions, pad=True, max_pixels=max_pixels)
    stitcher: _Stitcher | None = None
    for result in iter_cutouts(grid.image, regions, max_pixels=max_pixels, origfile=origfile,
                               pad=pad, **filters):
        if result.status != "partial" or padded is None:
            yield result
            continue
        plan = padded[result.index]
        if plan.status == "error":  # the whole box is larger than allowed
            yield CutoutResult("error", None, plan.message, index=result.index)
            continue
        if stitcher is None:
            stitcher = _Stitcher(grid, neighbours, method, origfile)
        stitched = stitcher.stitch(plan, regions[result.index], result.index)
        yield result if stitched is None else stitched


class _Stitcher:
    """The neighbours of one grid image, their grid relation found once per call."""

    def __init__(self, grid: Tile, neighbours: Sequence[Tile], method: str,
                 origfile: str | None) -> None:
        self.grid = grid
        self.neighbours = list(neighbours)
        self.method = method
        self.origfile = origfile
        grid_wcs = grid.image.wcs
        whole = ((0, grid.image.fits_shape[0]), (0, grid.image.fits_shape[1]))
        self.offsets = []  # per neighbour: the whole-pixel offset of a shared grid, or None
        for tile in neighbours:
            offset = shared_grid_offset(grid_wcs, tile.image.wcs)
            if offset is not None and not offset_holds(grid_wcs, tile.image.wcs, offset, whole):
                offset = None
            self.offsets.append(offset)
        self.centres = [self._centre_on_grid(tile.image) for tile in neighbours]

    def _centre_on_grid(self, image: OpenImage) -> tuple[float, float]:
        """The centre of an image, in grid-image pixels (NaN when it does not project)."""
        nx, ny = image.fits_shape[:2]
        world = image.wcs.celestial.all_pix2world([[(nx - 1) / 2, (ny - 1) / 2]], 0)
        ra, dec = _to_icrs(image, world[:, 0], world[:, 1])
        x, y = self.grid.image.sky_to_pixel.pixels(ra, dec)
        return float(x[0]), float(y[0])

    def stitch(self, plan: Plan, region: Shape, index: int) -> StitchedResult | None:
        """The stitched stamp of one plan, or None when no neighbour covers any of it."""
        assert plan.box is not None and plan.read_box is not None
        (x0, x1), (y0, y1) = plan.box.ranges[:2]
        shape = (y1 - y0, x1 - x0)
        owner = np.zeros(shape, dtype=np.int16)  # 1 = grid image, k + 2 = neighbour k
        (ix0, ix1), (iy0, iy1) = plan.read_box.ranges[:2]
        owner[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = 1
        free_y, free_x = np.nonzero(owner == 0)
        grid_x, grid_y = free_x + x0, free_y + y0
        best = np.full(free_x.size, math.inf)
        chosen = np.full(free_x.size, -1)
        positions: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # neighbour -> its pixels
        copies: set[int] = set()
        sky: tuple[np.ndarray, np.ndarray] | None = None
        for k, tile in enumerate(self.neighbours):
            offset = self.offsets[k]
            if offset is not None:
                px, py = grid_x + offset[0], grid_y + offset[1]
                copies.add(k)
            else:
                if sky is None:
                    sky = _pixels_to_icrs(self.grid.image, grid_x, grid_y)
                px, py = tile.image.sky_to_pixel.pixels(*sky)
            nx, ny = tile.image.fits_shape[:2]
            with np.errstate(invalid="ignore"):
                covers = (px >= -0.5) & (px < nx - 0.5) & (py >= -0.5) & (py < ny - 0.5)
            distance = np.hypot(grid_x - self.centres[k][0], grid_y - self.centres[k][1])
            better = covers & (distance < best)
            best[better] = distance[better]
            chosen[better] = k
            positions[k] = (px, py)
        if not (chosen >= 0).any():
            return None
        used = sorted(set(chosen[chosen >= 0].tolist()))
        kind = _PixelKind.of([self.grid.image] + [self.neighbours[k].image for k in used])
        stamp = np.full(shape, kind.fill, dtype=kind.dtype)
        stamp[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = kind.convert(
            self.grid.image, self.grid.image.read(plan.read_box))
        source_map = np.zeros(shape, dtype=np.int16)
        source_map[owner == 1] = 1
        contributions = [Contribution(self.grid.label, COPIED, int((owner == 1).sum()))]
        for number, k in enumerate(used, start=2):
            mine = chosen == k
            rows, cols = free_y[mine], free_x[mine]
            px, py = positions[k]
            if k in copies:
                values = self._copied(k, px[mine], py[mine], kind)
                how = COPIED
                source_map[rows, cols] = number
            else:
                values = self._resampled(k, rows, cols, (x0, y0), kind)
                how = RESAMPLED
                source_map[rows, cols] = -number
            stamp[rows, cols] = values
            contributions.append(Contribution(self.neighbours[k].label, how, int(mine.sum())))
        bitpix = dtype_bitpix(stamp.dtype)
        template = make_template(self.grid.image, self.origfile, bitpix)
        # BLANK only when some pixel has no data (readers turn integers with BLANK to floats)
        blank = kind.fill if stamp.dtype.kind in "iu" and (source_map == 0).any() else None
        box = plan.box
        return StitchedResult(
            STITCHED, box, f"stitched from {len(contributions)} images", stamp.astype(
                stamp.dtype.newbyteorder(">"), copy=False), index=index,
            request=describe_region(region), shape_name=type(region).__name__.upper(),
            template=template, blank=blank if not template.has_blank else None,
            lookup_hdus=self.grid.image.lookup_hdus, contributions=contributions,
            source_map=source_map, method=self.method)

    def _copied(self, k: int, px: np.ndarray, py: np.ndarray, kind: _PixelKind) -> np.ndarray:
        """Pixels of neighbour k at whole-pixel positions, read as one rectangle."""
        image = self.neighbours[k].image
        xs, ys = np.round(px).astype(np.int64), np.round(py).astype(np.int64)
        box = _box(xs.min(), xs.max() + 1, ys.min(), ys.max() + 1)
        block = kind.convert(image, image.read(box))
        return block[ys - box.y0, xs - box.x0]

    def _resampled(self, k: int, rows: np.ndarray, cols: np.ndarray, origin: tuple[int, int],
                   kind: _PixelKind) -> np.ndarray:
        """Pixels of neighbour k resampled onto the stamp pixels (rows, cols)."""
        image = self.neighbours[k].image
        row0, row1, col0, col1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        target = box_wcs(self.grid.image.wcs.celestial, origin[0] + col0, origin[1] + row0,
                         (row1 - row0, col1 - col0))
        # the source pixels under the target block, with a margin for the interpolation
        corner_x = np.array([col0, col1 - 1, col0, col1 - 1, (col0 + col1) // 2]) + origin[0]
        corner_y = np.array([row0, row0, row1 - 1, row1 - 1, (row0 + row1) // 2]) + origin[1]
        edge_x, edge_y = _block_outline(col0 + origin[0], col1 + origin[0],
                                        row0 + origin[1], row1 + origin[1])
        sx, sy = image.sky_to_pixel.pixels(*_pixels_to_icrs(
            self.grid.image, np.concatenate([corner_x, edge_x]),
            np.concatenate([corner_y, edge_y])))
        nx, ny = image.fits_shape[:2]
        good = np.isfinite(sx) & np.isfinite(sy)
        source = _box(int(np.floor(sx[good].min())) - MARGIN,
                      int(np.ceil(sx[good].max())) + MARGIN + 1,
                      int(np.floor(sy[good].min())) - MARGIN,
                      int(np.ceil(sy[good].max())) + MARGIN + 1).clip((nx, ny))
        method = NEAREST if _is_mask(image) else self.method
        pixels = kind.for_resampling(image, image.read(source))
        values, covered = resample(pixels, box_wcs(image.wcs.celestial, source.x0, source.y0,
                                                   source.shape), target,
                                   (row1 - row0, col1 - col0), method)
        picked = values[rows - row0, cols - col0]
        return kind.from_resampled(picked, covered[rows - row0, cols - col0])


def _block_outline(x0: int, x1: int, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions along the border of a block, about one per pixel (at most 256
    per side): its sky outline, whose image in another projection bounds the block's."""
    xs = np.linspace(x0 - 0.5, x1 - 0.5, min(x1 - x0, 256) + 1)
    ys = np.linspace(y0 - 0.5, y1 - 0.5, min(y1 - y0, 256) + 1)
    x = np.concatenate([xs, xs, np.full(ys.size, xs[0]), np.full(ys.size, xs[-1])])
    y = np.concatenate([np.full(xs.size, ys[0]), np.full(xs.size, ys[-1]), ys, ys])
    return x, y


def _box(x0: int, x1: int, y0: int, y1: int):
    from vo_service.engine.geometry import PixelBox

    return PixelBox(((int(x0), int(x1)), (int(y0), int(y1))))


def _to_icrs(image: OpenImage, lon: np.ndarray, lat: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    frame = image.sky_to_pixel.frame
    if isinstance(frame, ICRS):
        return lon, lat
    icrs = SkyCoord(lon, lat, unit="deg", frame=frame).icrs
    return icrs.ra.deg, icrs.dec.deg


def _pixels_to_icrs(image: OpenImage, x: np.ndarray, y: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra, dec) of pixel positions of an image (NaN where they have none)."""
    celestial = image.wcs.celestial
    with np.errstate(invalid="ignore"):
        world = celestial.all_pix2world(np.column_stack([x, y]).astype(float), 0)
    lon, lat = world[:, 0], world[:, 1]
    if celestial.wcs.lng != 0:
        lon, lat = lat, lon
    return _to_icrs(image, lon, lat)


@dataclass(frozen=True)
class _PixelKind:
    """What the stamp holds: the raw pixels (all sources alike) or physical values."""

    dtype: np.dtype
    raw: bool
    fill: float | int

    @property
    def integer(self) -> bool:
        return self.dtype.kind in "iu"

    @classmethod
    def of(cls, images: list[OpenImage]) -> _PixelKind:
        first = images[0]
        signature = {(image.dtype.str, _scaling(image)) for image in images}
        if len(signature) == 1:
            dtype = first.dtype.newbyteorder("=")
            if dtype.kind in "iu":
                bitpix = dtype_bitpix(dtype)
                return cls(dtype, True, int(first.header.get("BLANK", BLANK_FOR_BITPIX[bitpix])))
            return cls(dtype, True, math.nan)
        wide = any(image.dtype.itemsize > 4 or (image.dtype.kind in "iu"
                                                and image.dtype.itemsize > 2)
                   for image in images)
        return cls(np.dtype(np.float64 if wide else np.float32), False, math.nan)

    def convert(self, image: OpenImage, pixels: np.ndarray) -> np.ndarray:
        """Pixels read from ``image`` as this stamp holds them."""
        if self.raw:
            return pixels
        return _physical(image, pixels).astype(self.dtype)

    def for_resampling(self, image: OpenImage, pixels: np.ndarray) -> np.ndarray:
        """What is resampled: raw values in a raw stamp (the scaling is linear and the
        same for all; integers are only ever taken from the nearest pixel, BLANK kept),
        physical ones otherwise."""
        return pixels.astype(np.float64) if self.raw else _physical(image, pixels)

    def from_resampled(self, values: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """Resampled float64 values as stamp pixels (uncovered ones filled)."""
        values = np.where(covered & np.isfinite(values), values, np.nan)
        if self.integer:
            return np.where(np.isfinite(values), np.round(np.nan_to_num(values)),
                            self.fill).astype(self.dtype)
        return values.astype(self.dtype)


def _is_mask(image: OpenImage) -> bool:
    """Integer pixels without scaling (flags, masks, counts): never interpolated."""
    scale, _, _ = _scaling(image)
    return image.dtype.kind in "iu" and scale == 1.0


def _scaling(image: OpenImage) -> tuple[float, float, int | None]:
    header = image.header
    blank = header.get("BLANK") if image.dtype.kind in "iu" else None
    return (float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0)),
            None if blank is None else int(blank))


def _physical(image: OpenImage, pixels: np.ndarray) -> np.ndarray:
    """Raw pixels in physical units (BSCALE/BZERO applied, BLANK as NaN), float64."""
    scale, zero, blank = _scaling(image)
    return physical_values(pixels, bscale=scale, bzero=zero, blank=blank, dtype=np.float64)
