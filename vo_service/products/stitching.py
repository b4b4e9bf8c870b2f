"""Stitched stamps of archive images: which tiles make one mosaic, which tile a stamp is
made on, and the cutting itself (pixels: `engine.stitch`).

A *mosaic* is the set of 2-D images of one collection, instrument, band and product type;
its *tiles* are told apart by their tile ID (the mapping's ``tile``): images that share a
tile ID (epochs of one tile) are never stitched into each other. The neighbours of an
image are the other tiles of its mosaic whose footprints meet its own.

A region whose stamp leaves the requested image is made on the grid of the tile that
contains the region's centre (the requested image when it does; else, of the neighbours
that do, the one whose centre is nearest) and filled from the other tiles. A region that
misses the requested image altogether stays a miss: stitching never answers for an image
the region does not touch.

The option is spelled the same everywhere: ``STITCH`` = ``none`` (the default), ``interp``
or ``flux`` (`engine.resample` says what each does and why ``interp`` is the default).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vo_service.archive.records import ImageRecord
from vo_service.cache import source_identity
from vo_service.engine.cutout import CutoutResult
from vo_service.engine.reading import OpenImage, OpenImagePool
from vo_service.engine.resample import METHODS
from vo_service.engine.sphere import angular_distance
from vo_service.engine.stitch import StitchedResult, Tile, stitch_cutouts
from vo_service.shapes import CenterSize, Circle, Polygon, Range, Shape

STITCH_PARAMETER = "STITCH"
STITCH_VALUES = ("none", *METHODS)
STITCHED_PREFIX = "stitched from: "


def parse_stitch(value: str | None) -> str | None:
    """The resampling method of a STITCH value; None for absent, empty or ``none``.
    Raises ValueError (the caller's UsageError) for any other value."""
    if value is None or not value.strip() or value.strip().lower() == "none":
        return None
    method = value.strip().lower()
    if method not in METHODS:
        raise ValueError(f"STITCH must be one of {', '.join(STITCH_VALUES)}, got {value!r}: "
                         "interp resamples other tiles bilinearly, flux conserves flux")
    return method


@dataclass(frozen=True)
class Stitching:
    """A stitching request: the method, and (once resolved against the index) the
    neighbours of each requested image as (publisher DID, neighbour records) pairs."""

    method: str
    neighbours: tuple[tuple[str, tuple[ImageRecord, ...]], ...] = ()

    def of(self, record: ImageRecord) -> tuple[ImageRecord, ...]:
        return dict(self.neighbours).get(record.obs_publisher_did, ())

    def key(self) -> dict[str, object]:
        """What a cached product depends on: the method and every neighbour as it is on
        disk now (a changed neighbour changes the stitched pixels)."""
        return {"method": self.method, "neighbours": [
            [did, [source_identity(r.path, r.hdu) for r in records]]
            for did, records in self.neighbours]}


def resolve(index: object, stitching: Stitching | None, records: Sequence[ImageRecord]
            ) -> Stitching | None:
    """``stitching`` with the neighbours of every record looked up in ``index``."""
    if stitching is None:
        return None
    return Stitching(stitching.method, tuple(
        (record.obs_publisher_did, mosaic_neighbours(index, record)) for record in records))


def mosaic_neighbours(index: object, record: ImageRecord) -> tuple[ImageRecord, ...]:
    """The other tiles of ``record``'s mosaic whose footprints meet its own (sorted by
    publisher DID); none for cubes and images without a footprint."""
    if len(record.shape) != 2 or record.dataproduct_type != "image" or record.s_ra is None:
        return ()
    probe = _covering_circle(record)
    if probe is None:
        return ()
    found, _ = index.search(pos=[probe])  # type: ignore[attr-defined]
    return tuple(other for other in found if _same_mosaic(record, other))


def _same_mosaic(record: ImageRecord, other: ImageRecord) -> bool:
    if other.obs_publisher_did == record.obs_publisher_did or len(other.shape) != 2:
        return False
    if (other.obs_collection, other.instrument_name, other.band, other.product_type,
            other.dataproduct_type) != (record.obs_collection, record.instrument_name,
                                        record.band, record.product_type,
                                        record.dataproduct_type):
        return False
    if record.tile is not None or other.tile is not None:
        return other.tile != record.tile  # epochs of one tile are not its neighbours
    return other.path != record.path or other.hdu != record.hdu


def _covering_circle(record: ImageRecord) -> Circle | None:
    """A circle holding the record's footprint."""
    if record.s_region:
        ra, dec = np.array(record.s_region, dtype=float).T
        radius = float(np.max(angular_distance(record.s_ra, record.s_dec, ra, dec)))
    elif record.s_fov:
        radius = record.s_fov / 2
    else:
        return None
    return Circle(record.s_ra % 360.0, record.s_dec, min(180.0, radius * 1.001 + 1e-6))


def cut_stitched(images: OpenImagePool, image: OpenImage, record: ImageRecord,
                 neighbours: Sequence[ImageRecord], regions: Sequence[Shape], *, method: str,
                 max_pixels: int | None = None, **filters: object) -> list[CutoutResult]:
    """Every region cut from the open ``image`` of ``record`` (input order): a stamp that
    leaves it is made on the grid of the tile holding the region's centre and filled from
    the mosaic's other tiles (status ``stitched``). ``filters``: band, time, pol."""
    regions = list(regions)
    if not neighbours or len(image.fits_shape) != 2:
        return stitch_cutouts(Tile(image, record.obs_publisher_did), [], regions,
                              method=method, max_pixels=max_pixels,
                              origfile=record.path.name, **filters)
    with contextlib.ExitStack() as stack:
        tiles = [Tile(image, record.obs_publisher_did)] + [
            Tile(stack.enter_context(images.image(other.path, other.hdu)),
                 other.obs_publisher_did) for other in neighbours]
        files = [record.path.name] + [other.path.name for other in neighbours]
        grids = [_grid_for(tiles, region) for region in regions]
        results: list[CutoutResult | None] = [None] * len(regions)

        def cut(grid: int, indices: list[int], others: Sequence[Tile]) -> None:
            if not indices:
                return
            for result in stitch_cutouts(tiles[grid], others, [regions[i] for i in indices],
                                         method=method, max_pixels=max_pixels,
                                         origfile=files[grid], **filters):
                result.index = indices[result.index]
                results[result.index] = result

        cut(0, [i for i, grid in enumerate(grids) if grid == 0], tiles[1:])
        # a centre in another tile: first whether the region meets the requested image
        elsewhere = [i for i, grid in enumerate(grids) if grid != 0]
        cut(0, elsewhere, [])
        for grid in sorted({grids[i] for i in elsewhere}):
            meeting = [i for i in elsewhere if grids[i] == grid
                       and results[i] is not None and results[i].status == "partial"]
            if meeting:
                cut(grid, meeting, tiles[:grid] + tiles[grid + 1:])
    return [result for result in results if result is not None]


def _grid_for(tiles: Sequence[Tile], region: Shape) -> int:
    """Which tile a stamp is made on: the first (the requested image) when it holds the
    region's centre; else, of those that do, the one whose centre is nearest."""
    ra, dec = region_centre(region)
    best, chosen = math.inf, 0
    for number, tile in enumerate(tiles):
        x, y = tile.image.sky_to_pixel.pixels(np.array([ra]), np.array([dec]))
        nx, ny = tile.image.fits_shape[:2]
        if not (-0.5 <= x[0] < nx - 0.5 and -0.5 <= y[0] < ny - 0.5):
            continue
        if number == 0:
            return 0
        distance = math.hypot(x[0] - (nx - 1) / 2, y[0] - (ny - 1) / 2)
        if distance < best:
            best, chosen = distance, number
    return chosen


def region_centre(region: Shape) -> tuple[float, float]:
    """The centre of a region (ICRS degrees)."""
    if isinstance(region, Circle | CenterSize):
        return region.ra, region.dec
    if isinstance(region, Polygon):
        from vo_service.engine.sky_regions import region_centre_radius

        ra, dec, _ = region_centre_radius(region)
        return ra, dec
    if isinstance(region, Range):
        low = region.ra_min if math.isfinite(region.ra_min) else 0.0
        high = region.ra_max if math.isfinite(region.ra_max) else 360.0
        span = (high - low) % 360.0 if region.wraps else high - low
        dec_low = max(region.dec_min, -90.0)
        dec_high = min(region.dec_max, 90.0)
        return (low + span / 2) % 360.0, (dec_low + dec_high) / 2
    raise TypeError(f"unsupported region {region!r}")


def stitched_images(result: CutoutResult) -> list[str]:
    """The images that gave a stitched stamp its pixels (grid image first); [] otherwise."""
    return result.labels if isinstance(result, StitchedResult) else []


def describe_sources(labels: Sequence[str]) -> str:
    """A manifest message listing the images of a stitched stamp (read back by
    :func:`sources_described`)."""
    return STITCHED_PREFIX + " ".join(labels)


def sources_described(message: str | None) -> list[str]:
    """The images listed by :func:`describe_sources` in a message, else []."""
    if not message or not message.startswith(STITCHED_PREFIX):
        return []
    return message[len(STITCHED_PREFIX):].split()
