"""Demo tiles whose edges overlap, for stitched stamps: both kinds of seam.

Field EDF-FORNAX-SEAMS (RA 52.70, Dec -28.40), VIS, products BGSUB, RMS and FLAG, under
``<root>/euclid/TRACTS/``:

- tract 1 is one TAN-SIP pixel grid cut into two patches side by side, tiles 102031001
  (west) and 102031002 (east), overlapping by 10 %: the same CRVAL, CD and SIP, CRPIX
  shifted by the patch origin, and the overlap holds the same pixels in both (one image
  rendered for the tract, then cut, as tract/patch coadds are). Stamps across this seam are
  filled by exact copy.
- tract 2 has its own tangent point: tile 102032001, north of tract 1, overlapping both
  patches by 10 % of its height. Stamps across this seam are filled by resampling.

Point sources with IDs from 300901 (``SEAM_FIRST_ID``) sit on the seams: on the patch seam,
on the tract seam, and on the corner where the three tiles meet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from vo_service.archive.demo_sky import (
    BAND_BY_NAME,
    Catalog,
    band_images,
    make_catalog,
    sip_for,
    wcs_cards,
)

SEAM_FIELD = ("EDF-FORNAX-SEAMS", 52.70, -28.40)
TRACT_PATCHES = (102031001, 102031002)
NEXT_TRACT_TILE = 102032001
PRODUCTS = ("BGSUB", "RMS", "FLAG")
PATCH_DEG = 0.025  # patch side at scale 1 (450 VIS pixels)
SEAM_FIRST_ID = 300901
# Seam sources in tract 1 pixels, as fractions of (tract width, patch height): on the patch
# seam (the middle of the patches' overlap), on the tract seam, on the corner of all three.
SEAM_POSITIONS = ((0.5, 0.25), (0.5, 0.6), (0.49, 0.4), (0.3, 0.95), (0.7, 0.95),
                  (0.5, 0.95), (0.53, 0.98))


@dataclass(frozen=True)
class SeamTile:
    """One tile to write: its ID, its position among the demo's tiles (for its date), the
    arrays of its products, its WCS cards and the BGSUB-only cards."""

    tile: int
    tile_index: int
    images: dict[str, np.ndarray]
    cards: fits.Header
    science_cards: fits.Header


def seam_tiles(seed: int, scale: int) -> tuple[list[SeamTile], Catalog]:
    """The patches of tract 1 and the tile of tract 2 (demo.py writes them), and the
    field's catalog, seam sources included."""
    band = BAND_BY_NAME["VIS"]
    _, ra0, dec0 = SEAM_FIELD
    patch = int(round(PATCH_DEG * scale * 3600 / band.pixel_arcsec))
    step = int(round(patch * 0.9))
    tract_shape = (patch, step + patch)  # numpy order: two patches side by side
    tract_cards = _cards(ra0, dec0, tract_shape, band)
    tract_wcs = WCS(tract_cards)
    # tract 2's tile: north of tract 1, overlapping it by 10 % of its height
    centre = tract_wcs.all_pix2world((tract_shape[1] - 1) / 2, step + (patch - 1) / 2, 0)
    next_cards = _cards(float(centre[0]), float(centre[1]), (patch, patch), band)
    side = (tract_shape[1] * band.pixel_arcsec / 3600, (step + patch) * band.pixel_arcsec / 3600)
    catalog = _with_seam_sources(
        make_catalog(seed, SEAM_FIELD[0], ra0,
                     dec0 + (side[1] - patch * band.pixel_arcsec / 3600) / 2, side,
                     first_id=300001), tract_wcs, tract_shape)
    tiles = []
    tract_images, tract_extra = band_images(seed, "tract1", band, tract_cards, catalog)
    for index, tile in enumerate(TRACT_PATCHES):
        x0 = index * step
        cards = tract_cards.copy()
        cards["NAXIS1"], cards["NAXIS2"] = patch, patch
        cards["CRPIX1"] = tract_cards["CRPIX1"] - x0  # one grid: only the origin moves
        images = {product: np.ascontiguousarray(tract_images[product][:, x0:x0 + patch])
                  for product in PRODUCTS}
        tiles.append(SeamTile(tile, 6 + index, images, cards, tract_extra))
    next_images, next_extra = band_images(seed, NEXT_TRACT_TILE, band, next_cards, catalog)
    tiles.append(SeamTile(NEXT_TRACT_TILE, 8, {p: next_images[p] for p in PRODUCTS},
                          next_cards, next_extra))
    return tiles, catalog


def _cards(ra: float, dec: float, shape: tuple[int, int], band) -> fits.Header:
    cards = wcs_cards(ra, dec, band.pixel_arcsec / 3600.0, shape, sip_for(band))
    cards["NAXIS"], cards["NAXIS1"], cards["NAXIS2"] = 2, shape[1], shape[0]
    return cards


def _with_seam_sources(catalog: Catalog, tract_wcs: WCS, tract_shape: tuple[int, int]
                       ) -> Catalog:
    """The catalog plus point sources of VIS magnitude 19.5 to 20.7 on the seams (flat
    spectra, so equally bright in every band)."""
    height, width = tract_shape
    x = np.array([fx * (width - 1) for fx, _ in SEAM_POSITIONS])
    y = np.array([fy * (height - 1) for _, fy in SEAM_POSITIONS])
    ra, dec = tract_wcs.all_pix2world(x, y, 0)
    count = len(SEAM_POSITIONS)
    mags = np.repeat((19.5 + 0.2 * np.arange(count))[:, None], catalog.mags.shape[1], axis=1)
    seam = Catalog(ids=np.arange(SEAM_FIRST_ID, SEAM_FIRST_ID + count),
                   ra=np.round(np.mod(ra, 360.0), 7), dec=np.round(dec, 7),
                   is_galaxy=np.zeros(count, bool), mags=np.round(mags, 3),
                   r_half_arcsec=np.zeros(count), axis_ratio=np.ones(count),
                   position_angle_deg=np.zeros(count), line_um=np.zeros(count))
    return Catalog(*(np.concatenate([getattr(catalog, name), getattr(seam, name)])
                     for name in catalog.__dataclass_fields__))
