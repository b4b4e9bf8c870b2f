"""Photometry on stamps: many stamps at once agree with photutils, recover a synthetic
source of known flux, take errors from RMS, flags from FLAG and the zero point from the
header or the mapping, and refuse an aperture that leaves the stamp."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import SigmaClip
from photutils.aperture import (
    ApertureStats,
    CircularAnnulus,
    CircularAperture,
    aperture_photometry,
)

from tests.archive_helpers import tan_header
from vo_service.archive.index import ArchiveIndex
from vo_service.archive.mapping import parse_mapping
from vo_service.engine.photometry import measure_windows
from vo_service.products.product_options import PhotometryOptions, parse_photometry
from vo_service.products.stamp_photometry import (
    PhotometryTarget,
    measure_unit,
    photometry_units,
)

FLUX = 5000.0
SIGMA_PIX = 1.6
NOISE = 2.0


def _star(shape: tuple[int, int], x: float, y: float, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    profile = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA_PIX**2))
    return 3.0 + FLUX * profile / profile.sum() + rng.normal(0, NOISE, shape)


def test_many_stamps_at_once_agree_with_photutils() -> None:
    rng = np.random.default_rng(7)
    windows, cx, cy = [], [], []
    for _ in range(6):
        x, y = 20 + rng.uniform(-0.5, 0.5), 20 + rng.uniform(-0.5, 0.5)
        windows.append(_star((41, 41), x, y, rng))
        cx.append(x)
        cy.append(y)
    values = np.stack(windows)
    rms = np.full_like(values, NOISE)
    found = measure_windows(values, np.array(cx), np.array(cy), (4.0, 6.0), (10.0, 15.0), rms)
    for n in range(len(windows)):
        ring = CircularAnnulus((cx[n], cy[n]), 10.0, 15.0)
        stats = ApertureStats(values[n], ring, sigma_clip=SigmaClip(3.0))
        assert found.background[n] == pytest.approx(float(stats.median), rel=1e-12)
        for k, radius in enumerate((4.0, 6.0)):
            aperture = CircularAperture((cx[n], cy[n]), radius)
            table = aperture_photometry(values[n], aperture, error=rms[n])
            expected = float(table["aperture_sum"][0]) - float(stats.median) * aperture.area
            assert found.flux[n, k] == pytest.approx(expected, rel=1e-10)
            level = aperture.area * float(stats.std) / math.sqrt(int(stats.sum_aper_area.value))
            assert found.flux_err[n, k] == pytest.approx(
                math.hypot(float(table["aperture_sum_err"][0]), level), rel=1e-9)
        # a source of known flux: the 6-pixel aperture holds all but exp(-r^2/2s^2)
        enclosed = FLUX * (1 - math.exp(-36 / (2 * SIGMA_PIX**2)))
        assert abs(found.flux[n, 1] - enclosed) < 4 * found.flux_err[n, 1]
    assert not found.clipped.any() and (found.flags == 0).all()


def test_flags_and_clipping() -> None:
    rng = np.random.default_rng(3)
    values = _star((41, 41), 20, 20, rng)[None]
    flags = np.zeros((1, 41, 41), dtype=np.int64)
    flags[0, 20, 22] = 4  # inside a 3-pixel aperture
    flags[0, 5, 5] = 16  # outside it
    outside = np.zeros((1, 41, 41), dtype=bool)
    found = measure_windows(values, np.array([20.0]), np.array([20.0]), (3.0,), (8.0, 12.0),
                            None, flags, outside)
    assert found.flag_bits[0] == 4 and not found.clipped[0]
    assert found.flags[0] & 4  # errors from the background scatter: no RMS
    outside[0, :, 22:] = True  # the stamp ends two pixels east of the target
    values[0][outside[0]] = np.nan
    found = measure_windows(values, np.array([20.0]), np.array([20.0]), (3.0,), (8.0, 12.0),
                            None, flags, outside)
    assert found.clipped[0] and found.flags[0] & 1


def test_photometry_options_are_parsed() -> None:
    options = parse_photometry("yes", ["2", "1 3"], "pix", None)
    assert options == PhotometryOptions((1.0, 2.0, 3.0), None, "pix")
    assert options.ring == (6.0, 9.0)
    assert parse_photometry(None, [], None, None) is None


def _write(path: Path, data: np.ndarray, product: str, extra: dict | None = None) -> None:
    header = tan_header(30.0, -10.0, nx=80, ny=80, scale_arcsec=0.5)
    header.update({"TILEID": "5", "FILTER": "r", "PRODTYPE": product, "BUNIT": "nJy",
                   **(extra or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, header).writeto(path)


def test_a_synthetic_source_of_known_flux_through_the_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    root = tmp_path / "data"
    science = _star((80, 80), 39.5, 39.5, rng) - 3.0
    _write(root / "survey" / "sci.fits", science.astype(np.float32), "BGSUB")
    _write(root / "survey" / "rms.fits", np.full((80, 80), NOISE, np.float32), "RMS")
    flag = np.zeros((80, 80), np.int32)
    flag[40, 40] = 2
    _write(root / "survey" / "flag.fits", flag, "FLAG")
    mapping = parse_mapping('[keywords]\nband = ["FILTER"]\nproduct_type = ["PRODTYPE"]\n'
                            'tile = ["TILEID"]\n[zero_points]\nr = 31.4\n')
    index = ArchiveIndex(tmp_path / "index.sqlite")
    assert index.update([root], mapping).failed == []
    (record,) = index.records(product_type="BGSUB")
    ra, dec = 30.0, -10.0  # the image centre: pixel (39.5, 39.5)
    target = PhotometryTarget(0, "star", ra, dec, ((10, 70), (10, 70)))
    options = PhotometryOptions((3.0,), (5.0, 7.5), "arcsec")  # 6 pixels; ring 10-15
    (unit,) = photometry_units(index, [(target, record)], options, mapping.zero_points)
    assert unit.rms is not None and unit.flag is not None
    (row,) = measure_unit(unit)
    enclosed = FLUX * (1 - math.exp(-36 / (2 * SIGMA_PIX**2)))
    assert row.status == "ok" and row.unit == "nJy" and row.error_source == "rms"
    assert abs(row.flux[0] - enclosed) < 4 * row.flux_err[0]
    assert row.zero_point == 31.4  # the mapping's: the header has none
    assert row.mag[0] == pytest.approx(31.4 - 2.5 * math.log10(row.flux[0]))
    assert row.flag_bits == 2
    # a stamp box that ends inside the aperture: refused, saying why
    (clipped,) = measure_unit(photometry_units(index, [(PhotometryTarget(
        1, "cut", ra, dec, ((10, 42), (10, 70))), record)], options)[0])
    assert clipped.status == "clipped" and "reaches past the stamp" in clipped.message
    assert math.isnan(clipped.flux[0])


def test_photometry_reads_physical_values_from_tile_compressed_integer_images(
        tmp_path: Path) -> None:
    """An unsigned 16-bit image (BZERO = 32768) and a BSCALE'd one, plain and RICE
    compressed: photometry sees the same physical values (compressed pixels used to be taken
    as already scaled, 32768 too low)."""
    from vo_service.engine.geometry import PixelBox
    from vo_service.engine.reading import OpenImage
    from vo_service.products.stamp_photometry import _physical

    rng = np.random.default_rng(5)
    box = PixelBox(((3, 20), (5, 33)))
    for name in ("unsigned", "scaled"):
        for compressed in (False, True):
            hdu = (fits.CompImageHDU(compression_type="RICE_1") if compressed
                   else fits.PrimaryHDU())
            if name == "unsigned":
                hdu.data = rng.integers(30_000, 40_000, (40, 30)).astype(np.uint16)
            else:  # raw integers with BSCALE/BZERO cards, as a survey writes them
                hdu.data = rng.integers(-500, 500, (40, 30)).astype(np.int16)
                hdu.header["BSCALE"], hdu.header["BZERO"] = 0.5, 100.0
            path = tmp_path / f"{name}_{compressed}.fits"
            (fits.HDUList([fits.PrimaryHDU(), hdu]) if compressed else hdu).writeto(path)
            number = 1 if compressed else 0
            expected = fits.getdata(path, number).astype(np.float64)  # astropy's physical
            assert fits.getheader(path, number).get("BZERO") in (32768, 100.0)
            with OpenImage(path, number) as image:
                values = _physical(image)(image.read(box))
            np.testing.assert_allclose(values, expected[5:33, 3:20],
                                       err_msg=f"{name}, compressed={compressed}")
