"""PSF and catalog products of the demo archive's tiles (deterministic, fast).

Per tile and band, ``EUC_MER_CATALOG-PSF-<BAND>_TILE<tile>.fits`` in the layout of Euclid
MER's CATALOG-PSF files: an empty primary HDU, a ``PSFIMAGE`` extension holding
``GRID`` x ``GRID`` PSF stamps of ``STMPSIZE`` pixels side by side (row-major from the
tile's south-east corner), and a ``PSFCAT`` table with each stamp's ``RA``, ``DEC`` (ICRS
deg), ``x``, ``y`` (0-based pixel on the tile) and ``x_center``, ``y_center`` (0-based
centre in the grid image). Each stamp is the very PSF the tile's images are rendered with
at that position (``demo_sky.psf_width_factor``: ``PSF_GRADIENT`` wider in one corner and
narrower in the opposite one), sampled at pixel centres and normalised to unit sum
(``PSFNORM = 'SUM'``).

Per tile, ``EUC_MER_FINAL-CAT_TILE<tile>.fits``: the injected sources whose position falls
on the tile's VIS image, with ``OBJECT_ID``, ``RIGHT_ASCENSION``, ``DECLINATION``,
``SOURCE_TYPE``, ``R_HALF`` and per band ``FLUX_<BAND>`` (uJy) and ``MAG_<BAND>`` (AB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from vo_service.archive.demo_sky import BANDS, Band, Catalog, psf_mixture, psf_width_factor

GRID = 6  # PSF stamps per side of a tile's grid
PSF_GRADIENT = 0.25  # PSF width 1 -/+ 0.25 at opposite corners of a tile
COLLECTION = "EUCLID-DEMO"


def stamp_side(band: Band) -> int:
    """Odd PSF stamp side (pixels) holding the widest PSF's wing out to 4 sigma."""
    wing_sigma = math.sqrt(6.25) * band.fwhm_arcsec / 2.3548 * (1 + PSF_GRADIENT)
    return 2 * math.ceil(4 * wing_sigma / band.pixel_arcsec) + 1


def psf_stamp(band: Band, width: float, side: int) -> np.ndarray:
    """The demo PSF of ``band`` centred on the middle pixel, unit sum (float32)."""
    weights, variances = psf_mixture(band, band.pixel_arcsec, width)
    offsets = np.arange(side) - (side - 1) / 2.0
    r2 = offsets[None, :] ** 2 + offsets[:, None] ** 2
    stamp = sum(w / (2 * np.pi * v) * np.exp(-0.5 * r2 / v)
                for w, v in zip(weights, variances, strict=True))
    return (stamp / stamp.sum()).astype(np.float32)


def write_psf_grid(path: Path, band: Band, cards: fits.Header, common: fits.Header,
                   write: Callable[[Path, fits.HDUList], None]) -> Path:
    """The CATALOG-PSF file of one band of a tile (``cards``: the tile's WCS + NAXISn)."""
    nx, ny = int(cards["NAXIS1"]), int(cards["NAXIS2"])
    side = stamp_side(band)
    steps = (np.arange(GRID) + 0.5) / GRID
    gx, gy = np.meshgrid(steps * (nx - 1), steps * (ny - 1))
    gx, gy = gx.ravel(), gy.ravel()
    ra, dec = WCS(cards).all_pix2world(gx, gy, 0)
    widths = psf_width_factor(gx, gy, (ny, nx), PSF_GRADIENT)
    grid = np.zeros((GRID * side, GRID * side), dtype=np.float32)
    x_center = np.zeros(GRID * GRID)
    y_center = np.zeros(GRID * GRID)
    for k, width in enumerate(widths):
        row, column = divmod(k, GRID)
        grid[row * side:(row + 1) * side, column * side:(column + 1) * side] = psf_stamp(
            band, float(width), side)
        x_center[k] = column * side + (side - 1) / 2.0
        y_center[k] = row * side + (side - 1) / 2.0
    header = common.copy()
    header["STMPSIZE"] = (side, "[pix] side of each PSF stamp")
    header["PSFNORM"] = ("SUM", "each PSF stamp sums to 1")
    header["PIXSCALE"] = (band.pixel_arcsec, "[arcsec] PSF pixel = image pixel")
    image = fits.ImageHDU(grid, header, name="PSFIMAGE")
    table = fits.BinTableHDU.from_columns([
        fits.Column("RA", "D", "deg", array=np.mod(ra, 360.0)),
        fits.Column("DEC", "D", "deg", array=dec),
        fits.Column("x", "D", "pix", array=gx),
        fits.Column("y", "D", "pix", array=gy),
        fits.Column("x_center", "D", "pix", array=x_center),
        fits.Column("y_center", "D", "pix", array=y_center),
    ], name="PSFCAT")
    primary = fits.PrimaryHDU(header=common)
    write(path, fits.HDUList([primary, image, table]))
    return path


def write_source_catalog(path: Path, vis_cards: fits.Header, catalog: Catalog,
                         common: fits.Header, write: Callable[[Path, fits.HDUList], None]
                         ) -> Path:
    """The tile's source catalog: the injected sources on its VIS image."""
    nx, ny = int(vis_cards["NAXIS1"]), int(vis_cards["NAXIS2"])
    x, y = WCS(vis_cards).all_world2pix(catalog.ra, catalog.dec, 0)
    on_tile = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
    sources = catalog.subset(np.flatnonzero(on_tile))
    columns = [
        fits.Column("OBJECT_ID", "K", array=sources.ids.astype(np.int64)),
        fits.Column("RIGHT_ASCENSION", "D", "deg", array=sources.ra),
        fits.Column("DECLINATION", "D", "deg", array=sources.dec),
        fits.Column("SOURCE_TYPE", "6A",
                    array=np.where(sources.is_galaxy, "galaxy", "star")),
        fits.Column("R_HALF", "E", "arcsec", array=sources.r_half_arcsec),
    ]
    for band in BANDS:
        name = band.name.replace("-", "_")
        columns.append(fits.Column(f"FLUX_{name}", "E", "uJy",
                                   array=sources.fluxes_ujy(band).astype(np.float32)))
        columns.append(fits.Column(f"MAG_{name}", "E", "mag",
                                   array=sources.mags[:, BANDS.index(band)]))
    table = fits.BinTableHDU.from_columns(columns, name="CATALOG")
    header = common.copy()
    write(path, fits.HDUList([fits.PrimaryHDU(header=header), table]))
    return path


def product_headers(tile: int, field: str, band: Band | None, product: str) -> fits.Header:
    """Descriptive keywords of a PSF (band) or catalog (band None) file."""
    header = fits.Header()
    header["TELESCOP"] = band.telescope if band else "Euclid"
    if band is not None:
        header["INSTRUME"] = band.instrument
        header["FILTER"] = band.name
    header["PRODTYPE"] = (product, "CATALOG-PSF (PSF grid) or CATALOG (sources)")
    header["TILEID"] = (tile, "survey tile identifier")
    header["OBJECT"] = field
    header["OBS_COLL"] = COLLECTION
    return header
