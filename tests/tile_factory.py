"""Tiled mosaics for stitching tests: one big image cut into overlapping tiles that share
its pixel grid (tract/patch style), and tiles with their own tangent points rendered from
one analytic sky of point sources (so the truth on any grid is known)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from tests import fits_factory

PIXEL_DEG = 0.2 / 3600
SIGMA_PIX = 2.0  # Gaussian PSF sigma in pixels of PIXEL_DEG


def split_into_tiles(directory: Path, header: fits.Header, data: np.ndarray,
                     boxes: dict[str, tuple[int, int, int, int]]) -> dict[str, Path]:
    """Write each box (x0, x1, y0, y1: 0-based, half-open) of ``data`` as a tile with the
    big image's WCS, CRPIX shifted: tiles on one pixel grid."""
    paths = {}
    for name, (x0, x1, y0, y1) in boxes.items():
        tile_header = header.copy()
        tile_header["CRPIX1"] -= x0
        tile_header["CRPIX2"] -= y0
        tile_header["FILTER"] = "VIS"
        paths[name] = fits_factory.write_image(directory / f"{name}.fits", tile_header,
                                               data[y0:y1, x0:x1])
    return paths


@dataclass(frozen=True)
class PointSky:
    """Gaussian point sources of known flux at known ICRS positions."""

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray

    def render(self, wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
        """The sky on a grid (flux per pixel; PSF sigma SIGMA_PIX pixels of PIXEL_DEG)."""
        x, y = wcs.all_world2pix(self.ra, self.dec, 0)
        scale = np.sqrt(abs(np.linalg.det(wcs.celestial.pixel_scale_matrix)))
        sigma = SIGMA_PIX * PIXEL_DEG / scale
        rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
        image = np.zeros(shape)
        for xs, ys, flux in zip(x, y, self.flux, strict=True):
            near = (abs(cols - xs) < 8 * sigma) & (abs(rows - ys) < 8 * sigma)
            image[near] += flux / (2 * np.pi * sigma**2) * np.exp(
                -((cols[near] - xs) ** 2 + (rows[near] - ys) ** 2) / (2 * sigma**2))
        return image


def tile_header(crval: tuple[float, float], shape: tuple[int, int], rotation_deg: float = 0.0,
                sip: bool = False) -> fits.Header:
    """A tile's WCS centred on ``crval`` (numpy ``shape``)."""
    header = fits_factory.celestial_header(
        crval=crval, crpix=((shape[1] + 1) / 2, (shape[0] + 1) / 2), scale_deg=PIXEL_DEG,
        rotation_deg=rotation_deg, sip=sip)
    header["FILTER"] = "VIS"
    return header


def write_rendered(path: Path, sky: PointSky, header: fits.Header, shape: tuple[int, int],
                   noise: float = 0.0, seed: int = 0) -> Path:
    """The sky rendered on the header's grid (float32), with optional Gaussian noise."""
    image = sky.render(WCS(header), shape)
    if noise:
        image = image + np.random.default_rng(seed).normal(0.0, noise, shape)
    return fits_factory.write_image(path, header, image.astype(np.float32))
