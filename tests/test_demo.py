"""The demo archive: layout, headers, WCS with SIP, the same sky in every band, the specials."""

from __future__ import annotations

import csv
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from vo_service.archive.demo import build_demo_archive

BANDS = ("VIS", "NIR-Y", "NIR-J", "NIR-H", "DES-G", "DES-R", "DES-I", "DES-Z")
PRODUCTS = ("BGSUB", "RMS", "FLAG", "BGMOD")
REQUIRED_KEYS = ("TELESCOP", "INSTRUME", "FILTER", "PRODTYPE", "TILEID", "OBS_COLL",
                 "DATE-OBS", "MJD-OBS", "EXPTIME", "BUNIT")


def image_hdus(path: Path) -> list[int]:
    with fits.open(path) as hdus:
        return [i for i, hdu in enumerate(hdus) if hdu.is_image and hdu.header["NAXIS"] > 0]


def tile_dirs(root: Path) -> list[Path]:
    return sorted((root / "euclid").glob("TILE*"))


def sources(root: Path) -> list[dict[str, str]]:
    with open(root / "sources.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_every_file_opens_verifies_and_has_the_contract_keywords(demo_archive: Path) -> None:
    files = sorted((demo_archive / "euclid").rglob("*.fits"))
    # images, MEF, cube, epochs, seam tiles; a PSF grid per tile and band, a catalog per tile
    assert len(files) == 4 * 8 * 4 + 1 + 1 + 2 * 20 + 3 * 3 + 4 * 8 + 4
    for path in files:
        with fits.open(path) as hdus, warnings.catch_warnings():
            warnings.simplefilter("error")  # no FITSFixedWarning: headers are standard
            hdus.verify("exception")
            if "CATALOG-PSF" in path.name or "FINAL-CAT" in path.name:
                assert hdus[0].header["OBS_COLL"] == "EUCLID-DEMO"
                continue
            for index in image_hdus(path):
                header = hdus[index].header
                missing = [key for key in REQUIRED_KEYS if key not in header]
                assert not missing, f"{path.name}[{index}] lacks {missing}"
                assert header["OBS_COLL"] == "EUCLID-DEMO"
                WCS(header)


def test_layout_has_every_band_and_product_of_every_tile(demo_archive: Path) -> None:
    tiles = tile_dirs(demo_archive)
    assert len(tiles) == 4
    for folder in tiles:
        tile = folder.name.removeprefix("TILE")
        for band in BANDS:
            for product in PRODUCTS:
                path = folder / f"EUC_MER_{product}-MOSAIC-{band}_TILE{tile}.fits"
                with fits.open(path) as hdus:
                    header = hdus[image_hdus(path)[0]].header
                    assert (header["FILTER"], header["PRODTYPE"]) == (band, product)
                    assert str(header["TILEID"]) == tile
                    instrument = {"V": "VIS", "N": "NISP", "D": "DECAM"}[band[0]]
                    assert header["INSTRUME"] == instrument
                    dtype = hdus[image_hdus(path)[0]].data.dtype
                    assert dtype.str[1:] == ("i4" if product == "FLAG" else "f4")


def test_images_have_a_tan_sip_wcs(demo_archive: Path) -> None:
    for path in (demo_archive / "euclid").glob("TILE*/*BGSUB*.fits"):
        header = fits.getheader(path, image_hdus(path)[0])
        assert header["CTYPE1"] == "RA---TAN-SIP"
        wcs = WCS(header)
        assert wcs.sip is not None
        assert 1e-8 < np.abs(wcs.sip.a).max() < 1e-5


def test_a_catalog_source_peaks_at_its_sky_position_in_every_band(demo_archive: Path) -> None:
    rows = [row for row in sources(demo_archive) if row["field"] == "EDF-FORNAX"]
    ra = np.array([float(row["ra"]) for row in rows])
    dec = np.array([float(row["dec"]) for row in rows])
    mag = np.array([float(row["mag_NIR_H"]) for row in rows])
    tile = tile_dirs(demo_archive)[0]
    tile_id = tile.name.removeprefix("TILE")
    checked = 0
    for index in np.argsort(mag):
        separation = np.hypot((ra - ra[index]) * np.cos(np.radians(dec[index])), dec - dec[index])
        neighbours = (separation < 4 / 3600) & (mag < mag[index] + 3)
        if neighbours.sum() > 1 or not 18.5 < mag[index] < 21.5 or not all(
                float(rows[index][f"mag_{band.replace('-', '_')}"]) < 22.5 for band in BANDS):
            continue
        peaks = []
        for band in ("VIS", "NIR-H", "DES-G", "DES-Z"):
            path = tile / f"EUC_MER_BGSUB-MOSAIC-{band}_TILE{tile_id}.fits"
            data, header = fits.getdata(path, header=True)
            x, y = WCS(header).all_world2pix(ra[index], dec[index], 0)
            col, row = int(round(float(x))), int(round(float(y)))
            if not (5 <= col < data.shape[1] - 5 and 5 <= row < data.shape[0] - 5):
                break
            box = data[row - 4:row + 5, col - 4:col + 5]
            peak_row, peak_col = np.unravel_index(np.argmax(box), box.shape)
            peaks.append(np.hypot(peak_col - 4 + col - x, peak_row - 4 + row - y))
        else:
            assert max(peaks) <= 1.0 + 1e-9, (rows[index]["id"], peaks)
            checked += 1
        if checked == 5:
            break
    assert checked == 5


def test_one_tile_is_rice_compressed_in_extension_1(demo_archive: Path) -> None:
    compressed = []
    for folder in tile_dirs(demo_archive):
        path = next(folder.glob("*BGSUB-MOSAIC-VIS*"))
        with fits.open(path) as hdus:
            if len(hdus) > 1 and isinstance(hdus[1], fits.CompImageHDU):
                assert hdus[1].compression_type == "RICE_1"
                assert hdus[1].header["PRODTYPE"] == "BGSUB"
                assert hdus[1].section[10:20, 10:20].shape == (10, 10)
                compressed.append(folder.name)
    assert len(compressed) == 1


def test_one_tile_straddles_ra_zero(demo_archive: Path) -> None:
    straddling = []
    for path in (demo_archive / "euclid").glob("TILE*/*BGSUB-MOSAIC-NIR-J*.fits"):
        header = fits.getheader(path, image_hdus(path)[0])
        ny, nx = header["NAXIS2"], header["NAXIS1"]
        ra, _ = WCS(header).all_pix2world([0, nx - 1], [ny / 2, ny / 2], 0)
        if ra.max() > 359 and ra.min() < 1:
            straddling.append(path)
    assert len(straddling) == 1


def test_the_multi_extension_file_names_every_hdu(demo_archive: Path) -> None:
    (path,) = (demo_archive / "euclid" / "MEF").glob("*.fits")
    with fits.open(path) as hdus:
        named = {hdus[i].header["EXTNAME"]: hdus[i].header["PRODTYPE"] for i in image_hdus(path)}
    assert named == {"SCI": "BGSUB", "RMS": "RMS", "FLAG": "FLAG"}


def test_the_cube_has_a_wavelength_axis_in_metres(demo_archive: Path) -> None:
    (path,) = (demo_archive / "euclid" / "CUBE").glob("*.fits")
    data, header = fits.getdata(path, header=True)
    assert data.ndim == 3
    assert (header["CTYPE3"], header["CUNIT3"], header["SPECSYS"]) == ("WAVE", "m", "BARYCENT")
    wcs = WCS(header)
    _, _, wave = wcs.pixel_to_world_values(0, 0, np.array([-0.5, data.shape[0] - 0.5]))
    assert np.allclose(wave, [1.2e-6, 1.9e-6])
    assert header["PRODTYPE"] == "CUBE"
    assert header["INSTRUME"] == "NISP"


def test_the_epochs_differ_in_time_and_in_the_variable_source(demo_archive: Path) -> None:
    paths = sorted((demo_archive / "euclid" / "EPOCHS").rglob("*BGSUB*.fits"))
    assert len(paths) == 20
    (variable,) = [row for row in sources(demo_archive) if row["variable"] == "1"]
    mjds, fluxes = [], []
    for path in paths:
        data, header = fits.getdata(path, header=True)
        mjds.append(header["MJD-OBS"])
        x, y = WCS(header).all_world2pix(float(variable["ra"]), float(variable["dec"]), 0)
        col, row = int(round(float(x))), int(round(float(y)))
        fluxes.append(data[row - 5:row + 6, col - 5:col + 6].sum())
    assert len(set(mjds)) == 20
    assert max(fluxes) > 2 * min(fluxes)


def test_stitching_tiles_of_both_kinds_overlap_with_sources_on_the_seams(
        demo_archive: Path) -> None:
    from vo_service.engine.grids import shared_grid_offset

    folder = demo_archive / "euclid" / "TRACTS"
    west, east, north = (fits.open(folder / f"EUC_MER_BGSUB-MOSAIC-VIS_TILE{tile}.fits")[0]
                         for tile in (102031001, 102031002, 102032001))
    west_wcs, east_wcs, north_wcs = (WCS(hdu.header) for hdu in (west, east, north))
    dx, dy = shared_grid_offset(west_wcs, east_wcs)  # one grid: the east patch starts at dx
    assert dy == 0 and 0 < -dx < west.data.shape[1]
    np.testing.assert_array_equal(west.data[:, -dx:], east.data[:, :west.data.shape[1] + dx])
    assert shared_grid_offset(west_wcs, north_wcs) is None  # its own tangent point
    seam_rows = [row for row in sources(demo_archive) if int(row["id"]) >= 300901]
    assert len(seam_rows) == 7 and {row["type"] for row in seam_rows} == {"star"}
    for row in seam_rows:  # each one is in at least two of the tiles
        inside = 0
        for hdu, wcs in ((west, west_wcs), (east, east_wcs), (north, north_wcs)):
            x, y = wcs.all_world2pix(float(row["ra"]), float(row["dec"]), 0)
            inside += bool(0 <= x < hdu.data.shape[1] and 0 <= y < hdu.data.shape[0])
        assert inside >= 2, row["id"]


def test_sources_csv_lists_positions_and_magnitudes(demo_archive: Path) -> None:
    rows = sources(demo_archive)
    assert len(rows) > 500
    assert {"id", "ra", "dec", "mag_VIS", "mag_NIR_H", "mag_DES_G"} <= set(rows[0])
    assert len({row["id"] for row in rows}) == len(rows)
    assert "EUC_MER_" in (demo_archive / "README.txt").read_text()


def test_archive_is_small(demo_archive: Path) -> None:
    total = sum(path.stat().st_size for path in demo_archive.rglob("*") if path.is_file())
    assert total < 300e6


@pytest.mark.slow
def test_the_same_seed_gives_byte_identical_files(demo_archive: Path, tmp_path: Path) -> None:
    summary = build_demo_archive(tmp_path)
    names = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    # images, MEF, cube, epochs, seams, PSF grids, catalogs + README, sources, variable, asteroid
    assert len(names) == 4 * 8 * 4 + 1 + 1 + 2 * 20 + 3 * 3 + 4 * 8 + 4 + 2 + 2
    for name in names:
        digests = {hashlib.sha256((root / name).read_bytes()).hexdigest()
                   for root in (demo_archive, tmp_path)}
        assert len(digests) == 1, name
    assert "FITS files" in summary and "built in" in summary


def test_tile_catalog_lists_the_injected_sources_on_the_tile(demo_archive: Path) -> None:
    rows = {int(row["id"]): row for row in sources(demo_archive)
            if row["field"] == "EDF-FORNAX"}
    tile = tile_dirs(demo_archive)[1]
    tile_id = tile.name.removeprefix("TILE")
    header = fits.getheader(tile / f"EUC_MER_BGSUB-MOSAIC-VIS_TILE{tile_id}.fits")
    ids = np.array(list(rows))
    ra = np.array([float(rows[i]["ra"]) for i in ids])
    dec = np.array([float(rows[i]["dec"]) for i in ids])
    x, y = WCS(header).all_world2pix(ra, dec, 0)
    on_tile = ((x >= -0.5) & (x < header["NAXIS1"] - 0.5)
               & (y >= -0.5) & (y < header["NAXIS2"] - 0.5))
    catalog = fits.getdata(tile / f"EUC_MER_FINAL-CAT_TILE{tile_id}.fits", "CATALOG")
    assert sorted(catalog["OBJECT_ID"]) == sorted(ids[on_tile])
    for entry in catalog[:20]:
        source = rows[int(entry["OBJECT_ID"])]
        assert entry["RIGHT_ASCENSION"] == pytest.approx(float(source["ra"]), abs=1e-7)
        assert entry["MAG_NIR_H"] == np.float32(source["mag_NIR_H"])
        flux = 10 ** ((23.9 - float(source["mag_VIS"])) / 2.5)
        assert entry["FLUX_VIS"] == np.float32(flux)
