"""PSF products: indexed from the demo archive's CATALOG-PSF files and answered per target,
nearest (the grid stamp itself) or interpolated (documented barycentric weights)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

import vo_service
from vo_service.archive.index import ArchiveIndex
from vo_service.archive.mapping import MappingError, parse_mapping

TARGET = (52.93, -28.09)  # inside tile 102018212 only


@pytest.fixture(scope="module")
def demo_index(demo_archive, tmp_path_factory) -> ArchiveIndex:
    index = ArchiveIndex(tmp_path_factory.mktemp("psf-index") / "index.sqlite")
    report = index.update([demo_archive])
    assert report.failed == []
    return index


def _grid(path):
    with fits.open(path) as hdul:
        table = hdul["PSFCAT"].data
        side = hdul["PSFIMAGE"].header["STMPSIZE"]
        image = np.array(hdul["PSFIMAGE"].data)
        ra, dec = np.array(table["RA"]), np.array(table["DEC"])
        xc, yc = np.array(table["x_center"]), np.array(table["y_center"])
    half = (side - 1) // 2
    stamps = [image[int(y) - half:int(y) + half + 1, int(x) - half:int(x) + half + 1]
              for x, y in zip(xc, yc, strict=True)]
    return ra, dec, stamps


def test_psf_files_are_indexed_with_their_tile_footprint(demo_index):
    psfs = demo_index.records(product_type="CATALOG-PSF")
    assert len(psfs) == 4 * 8  # every tile x band
    assert {r.product_kind for r in psfs} == {"psf"}
    assert {r.dataproduct_type for r in psfs} == {"image"}
    for record in psfs[:8]:
        (image,) = demo_index.records(tile=record.tile, band=record.band,
                                      product_type="BGSUB")
        assert record.s_region == image.s_region
        assert record.em_min == image.em_min and record.instrument_name == image.instrument_name


def test_nearest_psf_at_a_grid_point_is_that_grid_stamp_exactly(demo_index):
    (record,) = [r for r in demo_index.records(product_type="CATALOG-PSF", band="VIS")
                 if r.tile == "102018212"]
    ra, dec, stamps = _grid(record.path)
    for row in (0, 14, 35):  # row 0 lies where tiles 102018211 and 102018212 overlap
        answers = vo_service.psf((ra[row], dec[row]), index=demo_index, band="VIS")
        (answer,) = [a for a in answers if a[0].header["ORIGFILE"] == record.path.name]
        assert np.array_equal(answer[0].data, stamps[row])
        assert answer[0].data.dtype == stamps[row].dtype
        header = answer[0].header
        assert header["PSFMETH"] == "nearest" and header["PSFROW"] == row + 1
        assert header["PSFDIST"] == pytest.approx(0.0, abs=1e-6)
        assert header["PSFNORM"] == "SUM"


def test_nearest_psf_is_the_grid_stamp_nearest_on_the_sky(demo_index):
    rng = np.random.default_rng(3)
    (record,) = [r for r in demo_index.records(product_type="CATALOG-PSF", band="NIR-H")
                 if r.tile == "102018212"]
    ra, dec, stamps = _grid(record.path)
    grid = SkyCoord(ra, dec, unit="deg")
    for _ in range(5):
        target = (TARGET[0] + rng.uniform(-0.02, 0.02), TARGET[1] + rng.uniform(-0.02, 0.02))
        separations = grid.separation(SkyCoord(*target, unit="deg")).arcsec
        answers = vo_service.psf(target, files=[record.path])
        (answer,) = answers
        nearest = int(np.argmin(separations))
        assert np.array_equal(answer[0].data, stamps[nearest])
        assert answer[0].header["PSFDIST"] == pytest.approx(separations[nearest], abs=1e-4)
        assert (answer[0].header["PSF_RA"], answer[0].header["PSF_DEC"]) == (ra[nearest],
                                                                             dec[nearest])


def test_interpolated_psf_is_the_documented_barycentric_mean(demo_index):
    (record,) = [r for r in demo_index.records(product_type="CATALOG-PSF", band="VIS")
                 if r.tile == "102018212"]
    ra, dec, stamps = _grid(record.path)
    target = (float(ra[14] + ra[15] + ra[20]) / 3, float(dec[14] + dec[15] + dec[20]) / 3)
    (interpolated,) = vo_service.psf(target, files=[record.path], method="interpolated")
    (nearest,) = vo_service.psf(target, files=[record.path])
    header = interpolated[0].header
    assert header["PSFMETH"] == "interpolated" and header["NPSF"] == 3
    rows = [header[f"PSFROW{k}"] - 1 for k in (1, 2, 3)]
    weights = np.array([header[f"PSFWGT{k}"] for k in (1, 2, 3)])
    assert weights.sum() == pytest.approx(1.0, abs=1e-8) and (weights > 0).all()
    # the weights are the target's barycentric coordinates in the gnomonic plane
    plane = WCS(naxis=2)
    plane.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    plane.wcs.crval = [float(np.mean(ra)), float(np.mean(dec))]
    corners = np.array(plane.wcs_world2pix(ra[rows], dec[rows], 0)).T
    point = np.array(plane.wcs_world2pix([target[0]], [target[1]], 0)).T[0]
    assert weights @ corners == pytest.approx(point, abs=1e-6)
    expected = sum(w * stamps[r].astype(float) for w, r in zip(weights, rows, strict=True))
    expected /= expected.sum()  # PSFNORM = SUM
    assert interpolated[0].data == pytest.approx(expected, abs=2e-7)
    assert float(interpolated[0].data.sum()) == pytest.approx(1.0, abs=1e-5)
    # the demo PSF widens across the tile: between grid points the two answers differ
    peak_change = abs(interpolated[0].data.max() / nearest[0].data.max() - 1)
    assert peak_change > 0.01


def test_psf_width_varies_across_the_tile(demo_index):
    (record,) = [r for r in demo_index.records(product_type="CATALOG-PSF", band="VIS")
                 if r.tile == "102018212"]
    _, _, stamps = _grid(record.path)
    peaks = [float(s.max()) for s in stamps]
    assert max(peaks) / min(peaks) > 1.5  # narrow in one corner, wide in the other
    assert all(float(s.sum()) == pytest.approx(1.0, abs=1e-5) for s in stamps)


def test_a_single_psf_image_and_one_based_centres(tmp_path):
    from tests.archive_helpers import write_image

    root = tmp_path / "root"
    write_image(root / "survey" / "img_TILE7.fits", 10.0, 20.0, nx=40, ny=30,
                cards={"TILEID": "7", "FILTER": "r", "PRODTYPE": "SCI"})
    psf = np.outer(np.hanning(9), np.hanning(9)).astype(np.float32)
    psf /= psf.sum()
    header = fits.Header({"TILEID": "7", "FILTER": "r", "PRODTYPE": "PSF"})
    fits.PrimaryHDU(psf, header).writeto(root / "survey" / "psf_TILE7.fits")
    fits.PrimaryHDU(psf, fits.Header({"TILEID": "8", "PRODTYPE": "PSF"})).writeto(
        root / "survey" / "psf_TILE8.fits")
    index = ArchiveIndex(tmp_path / "index.sqlite")
    report = index.update([root])
    (lonely,) = report.failed  # tile 8 has no image: nowhere to apply the PSF
    assert lonely[0].name == "psf_TILE8.fits" and "no sky coverage" in lonely[1]
    (record,) = index.records(product_kind="psf")
    assert record.tile == "7"
    (answer,) = vo_service.psf((10.0, 20.0), index=index)
    assert np.array_equal(answer[0].data, psf) and answer[0].header["PSFMETH"] == "single image"
    assert vo_service.psf((50.0, 20.0), index=index) == []  # outside the tile

    # a grid whose table gives 1-based centres (FITS convention)
    side = 5
    stamps = [np.full((side, side), k + 1.0, dtype=np.float32) for k in range(3)]
    grid = np.hstack(stamps)
    table = fits.BinTableHDU.from_columns([
        fits.Column("ra", "D", array=[10.0, 10.001, 10.002]),
        fits.Column("dec", "D", array=[20.0, 20.0, 20.0]),
        fits.Column("X_CENTER", "D", array=[3.0, 8.0, 13.0]),
        fits.Column("Y_CENTER", "D", array=[3.0, 3.0, 3.0])])
    path = tmp_path / "grid.fits"
    fits.HDUList([fits.PrimaryHDU(grid, fits.Header({"STMPSIZE": side})), table]).writeto(path)
    (answer,) = vo_service.psf((10.0019, 20.0), files=[path])
    assert np.array_equal(answer[0].data, stamps[2]) and answer[0].header["PSFNORM"] == "NONE"


def test_mapping_products_section_is_checked():
    assert parse_mapping('[products]\npsf = ["MYPSF"]\n').product_kind("mypsf") == "psf"
    with pytest.raises(MappingError, match="not one of"):
        parse_mapping('[products]\nspectra = ["X"]\n')
