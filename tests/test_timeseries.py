"""Time series of one target through the Python API: exact stamps per epoch, the EPOCHS
table, the aligned cube, light curves and moving targets, on the demo archive's
time-domain field (20 epochs, a variable star of known light curve, an asteroid)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, FITSFixedWarning

import vo_service
from vo_service.archive.index import ArchiveIndex
from vo_service.catalogs.ephemerides import read_ephemeris

warnings.simplefilter("ignore", FITSFixedWarning)
VIS = {"band": "VIS", "product_type": "BGSUB"}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def index(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> ArchiveIndex:
    archive = ArchiveIndex(tmp_path_factory.mktemp("ts-index") / "index.sqlite")
    assert archive.update([demo_archive]).failed == []
    return archive


@pytest.fixture(scope="module")
def variable(variable_star: dict[str, str]) -> tuple[float, float]:
    return float(variable_star["ra"]), float(variable_star["dec"])


def test_stack_has_one_exact_stamp_per_epoch_in_time_order(index, variable) -> None:
    stack = vo_service.time_series(variable, 41, index=index, **VIS)
    table = stack["EPOCHS"].data
    assert len(table) == 20 and list(table["STATUS"]) == ["ok"] * 20
    assert np.all(np.diff(table["T_MID"]) > 0)
    assert [hdu.name for hdu in stack[1:-1]] == [f"EPOCH{n}" for n in range(1, 21)]
    target = SkyCoord(*variable, unit="deg")
    for hdu, row in zip(stack[1:-1], table, strict=True):
        record = index.get(row["IMAGE_ID"])
        with fits.open(record.path) as source:
            reference = Cutout2D(source[0].data, target, 41, wcs=WCS(source[0].header),
                                 mode="trim")
            assert hdu.header["MJD-OBS"] == pytest.approx(source[0].header["MJD-OBS"])
            assert hdu.header["EXPTIME"] == source[0].header["EXPTIME"]
            assert hdu.header["DATE-OBS"].startswith(source[0].header["DATE-OBS"][:19])
        assert np.array_equal(hdu.data, reference.data)  # exact source pixels
        x, y = WCS(hdu.header).world_to_pixel(target)
        assert (x + 1, y + 1) == (pytest.approx(hdu.header["TGT_X"], abs=1e-3),
                                  pytest.approx(hdu.header["TGT_Y"], abs=1e-3))
        assert (row["CUTX0"], row["CUTY0"]) == (hdu.header["CUTX0"], hdu.header["CUTY0"])
        assert row["T_START"] == pytest.approx(record.t_min)


def test_time_interval_and_local_files_give_the_same_stamps(index, variable,
                                                            demo_archive) -> None:
    everything = vo_service.time_series(variable, 21, index=index, **VIS)["EPOCHS"].data
    lo, hi = everything["T_START"][4] - 0.01, everything["T_END"][9] + 0.01
    chosen = vo_service.time_series(variable, 21, index=index, time=(lo, hi), **VIS)
    assert list(chosen["EPOCHS"].data["IMAGE_ID"]) == list(everything["IMAGE_ID"][4:10])
    files = sorted(demo_archive.glob("euclid/EPOCHS/*/*BGSUB*.fits"), reverse=True)
    local = vo_service.time_series(variable, 21, files=files)
    assert len(local) == len(chosen) + 14
    for mine, theirs in zip(local[1:-1][4:10], chosen[1:-1], strict=True):
        assert np.array_equal(mine.data, theirs.data)


def test_aligned_cube_resamples_on_the_first_grid_and_keeps_flux(index, variable) -> None:
    cube = vo_service.time_series(variable, 41, index=index, cube=True, **VIS)
    data, header = cube["CUBE"].data, cube["CUBE"].header
    assert data.shape == (20, 41, 41)
    assert header["RESAMPLE"] == "reproject_interp bilinear"
    assert header["FLUXCONV"] == "PER_PIXEL" and header["RESAMPLD"] is True
    stack = vo_service.time_series(variable, 41, index=index, **VIS)
    assert np.array_equal(data[0], stack["EPOCH1"].data)  # the reference is not resampled
    assert len(cube["EPOCHS"].data) == 20
    # the variable star keeps its flux through resampling (1 %), epoch by epoch
    resampled = data[:, 10:31, 10:31].sum(axis=(1, 2))
    exact = np.array([stack[f"EPOCH{n}"].data[10:31, 10:31].sum() for n in range(1, 21)])
    assert np.allclose(resampled, exact, rtol=0.01)
    assert np.ptp(exact) > 0.5 * exact.mean()  # and it does vary: the test can fail


def test_light_curve_recovers_the_injected_one(index, variable, demo_archive,
                                               tmp_path) -> None:
    injected = rows(demo_archive / "variable.csv")
    curve = vo_service.light_curve(variable, index=index, aperture=1.5, annulus=(2.5, 4.0),
                                   plot=tmp_path / "curve.png", **VIS)
    assert len(curve) == len(injected) == 20
    flux = np.array(curve["flux"])
    error = np.array(curve["flux_err"])
    truth = np.array([float(row["flux_uJy"]) for row in injected])
    assert np.array_equal(np.array(curve["time"]).round(6),
                          np.array([float(row["mjd_mid"]) for row in injected]).round(6))
    pulls = (flux - truth) / error
    assert np.all(np.abs(pulls) < 3.5), pulls
    assert np.mean(pulls**2) < 2.0  # the errors are neither too small nor wildly large
    assert np.all(error < 0.05 * truth)  # and not so large that anything would pass
    assert set(curve["error_source"]) == {"rms"} and set(curve["rms_image_id"]) != {""}
    assert str(curve["flux"].unit) == "uJy"
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_light_curve_of_a_synthetic_star_from_its_background(tmp_path) -> None:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:80, :80]
    files = []
    for number, flux in enumerate((1000.0, 1500.0, 700.0)):
        sigma = 2.0
        star = flux * np.exp(-((xx - 40.3) ** 2 + (yy - 39.6) ** 2) / (2 * sigma**2)) / (
            2 * np.pi * sigma**2)
        header = WCS(naxis=2)
        header.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        header.wcs.crval, header.wcs.crpix = [150.0, 2.0], [40.5, 40.5]
        header.wcs.cdelt = [-1 / 3600, 1 / 3600]
        cards = header.to_header()
        cards["MJD-OBS"], cards["EXPTIME"], cards["BUNIT"] = 60000.0 + number, 30.0, "adu"
        path = tmp_path / f"epoch{number}.fits"
        fits.writeto(path, (star + 5.0 + rng.normal(0, 0.5, star.shape)).astype(np.float32),
                     cards)
        files.append(path)
    target = WCS(cards).pixel_to_world(40.3, 39.6)
    curve = vo_service.light_curve(target, files=files, aperture=10, annulus=(14, 22))
    assert list(curve["time"]) == pytest.approx([60000.0, 60001.0, 60002.0])
    truth = np.array([1000.0, 1500.0, 700.0])
    assert np.all(np.abs(np.array(curve["flux"]) - truth) < 3 * np.array(curve["flux_err"]))
    assert set(curve["error_source"]) == {"background"} and set(curve["flags"]) == {4}


def test_moving_target_stamps_are_centred_on_the_asteroid(index, demo_archive) -> None:
    ephemeris = read_ephemeris(demo_archive / "asteroid.csv")
    assert ephemeris.ra_rate is not None  # the demo's ephemeris carries rates
    stack = vo_service.time_series(None, 15, index=index, ephemeris=ephemeris, **VIS)
    table = stack["EPOCHS"].data
    assert len(table) == 20  # every epoch inside the ephemeris, on the image or not
    on_image = table["STATUS"] != "no-overlap"
    assert 8 <= on_image.sum() < 20
    assert set(table["STATUS"][~on_image]) == {"no-overlap"}
    for row in table[on_image]:
        hdu = stack[row["EXTNAME"]]
        peak_y, peak_x = np.unravel_index(np.nanargmax(hdu.data), hdu.data.shape)
        assert abs(peak_x + 1 - hdu.header["TGT_X"]) <= 1.0
        assert abs(peak_y + 1 - hdu.header["TGT_Y"]) <= 1.0
        if row["STATUS"] == "ok":  # a full stamp is centred on the predicted position
            assert abs(hdu.header["TGT_X"] - 8) <= 1 and abs(hdu.header["TGT_Y"] - 8) <= 1
        ra, dec = ephemeris.position_at(row["T_MID"])
        assert (row["RA"], row["DEC"]) == (pytest.approx(ra[0]), pytest.approx(dec[0]))


def test_path_and_fixed_position_side_by_side(index, demo_archive, variable) -> None:
    stack = vo_service.time_series(None, 15, index=index, fixed=variable, **VIS,
                                   ephemeris=demo_archive / "asteroid.csv")
    table = stack["EPOCHS"].data
    assert sorted(set(table["KIND"])) == ["fixed", "path"]
    fixed = table[table["KIND"] == "fixed"]
    assert len(fixed) == 20 and set(fixed["STATUS"]) == {"ok"}
    assert {hdu.name for hdu in stack} >= {f"FIXED{n}" for n in range(1, 21)}


def test_ephemeris_interpolation_follows_the_track() -> None:
    from vo_service.archive.demo_epochs import asteroid_position

    centre = (53.3, -27.85)
    times = np.arange(60000.0, 60030.0, 3.0)
    ra, dec = asteroid_position(times, centre)
    text = "mjd,ra,dec\n" + "".join(f"{t},{a:.10f},{d:.10f}\n"
                                    for t, a, d in zip(times, ra, dec, strict=True))
    plain = read_ephemeris(text.encode(), filename="track.csv")
    query = np.array([60001.3, 60014.9, 60026.0])
    exact_ra, exact_dec = asteroid_position(query, centre)
    got_ra, got_dec = plain.position_at(query)
    offset = SkyCoord(got_ra, got_dec, unit="deg").separation(
        SkyCoord(exact_ra, exact_dec, unit="deg")).to_value(u.arcsec)
    assert np.all(offset < 0.01)
    outside_ra, _ = plain.position_at([59999.0, 60100.0])
    assert np.all(np.isnan(outside_ra))  # no extrapolation
