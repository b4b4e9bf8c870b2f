"""Stitched cutouts of local files (the Python API and ``vo-service cutout --stitch``):
which files are tiles of one mosaic, and which tile each target's stamp is cut from.

Files are tiles of one mosaic when their image HDUs agree on the filter (``FILTER`` or
``BAND``), the product (``PRODTYPE``), the unit (``BUNIT``) and the number of axes. A
target's stamp is made on the grid of the tile that contains its centre (of several, the
one whose centre is nearest, in that tile's pixels; of none, the nearest one) and filled
from the other tiles of its mosaic (`engine.stitch`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vo_service.engine.cutout import CutoutResult
from vo_service.engine.reading import OpenImage
from vo_service.engine.stitch import Tile, stitch_cutouts
from vo_service.shapes import CenterSize

GROUP_KEYWORDS = ("FILTER", "BAND", "PRODTYPE", "BUNIT")


def mosaic_key(image: OpenImage) -> tuple[object, ...]:
    """What tiles of one mosaic share: filter, product, unit and number of axes."""
    return (*(str(image.header.get(key, "")).strip() for key in GROUP_KEYWORDS),
            len(image.fits_shape))


def grid_choice(images: Sequence[OpenImage], ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """For every target, the index of the image its stamp is made on: of the images that
    contain it, the one whose centre is nearest (in that image's pixels); of none, the
    nearest one."""
    best = np.full((2, ra.size), np.inf)  # (not inside, distance): the smaller the better
    choice = np.zeros(ra.size, dtype=np.int64)
    for number, image in enumerate(images):
        x, y = image.sky_to_pixel.pixels(ra, dec)
        nx, ny = image.fits_shape[:2]
        with np.errstate(invalid="ignore"):
            inside = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        distance = np.hypot(x - (nx - 1) / 2, y - (ny - 1) / 2)
        distance = np.where(np.isfinite(distance), distance, np.inf)
        outside = (~inside).astype(float)
        better = (outside < best[0]) | ((outside == best[0]) & (distance < best[1]))
        best[0][better], best[1][better] = outside[better], distance[better]
        choice[better] = number
    return choice


def stitched_cutouts(files: Sequence[tuple[Path, int]], regions: Sequence[CenterSize], *,
                     method: str, pad: bool = False, max_pixels: int | None = None
                     ) -> list[tuple[int, CutoutResult]]:
    """One stamp per target and mosaic among ``files`` ((path, HDU) pairs), each on the grid
    of the tile holding its centre: (position of the grid file in ``files``, result) pairs,
    results indexed by target."""
    ra = np.array([region.ra for region in regions], dtype=float)
    dec = np.array([region.dec for region in regions], dtype=float)
    out: list[tuple[int, CutoutResult]] = []
    with contextlib.ExitStack() as stack:
        images = [stack.enter_context(OpenImage(path, hdu)) for path, hdu in files]
        groups: dict[tuple[object, ...], list[int]] = {}
        for number, image in enumerate(images):
            groups.setdefault(mosaic_key(image), []).append(number)
        for members in groups.values():
            choice = grid_choice([images[m] for m in members], ra, dec)
            for position, member in enumerate(members):
                targets = np.flatnonzero(choice == position)
                if not targets.size:
                    continue
                tiles = [Tile(images[m], _label(*files[m])) for m in members]
                results = stitch_cutouts(
                    tiles[position], tiles[:position] + tiles[position + 1:],
                    [regions[t] for t in targets], method=method, pad=pad,
                    max_pixels=max_pixels)
                for result in results:
                    result.index = int(targets[result.index])
                    out.append((member, result))
    return out


def _label(path: Path, hdu: int) -> str:
    """How a stitched stamp's header names a file: its name, and the HDU unless 0."""
    return path.name if hdu == 0 else f"{path.name}[{hdu}]"
