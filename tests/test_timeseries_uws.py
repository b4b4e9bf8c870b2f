"""Time-series UWS jobs (SERIES) through the real server, with pyvo and httpx: the stack,
per-epoch stamps, the epochs manifest, the cube, the light curve, moving targets."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import pyvo
from astropy.io import fits
from astropy.io.votable import parse_single_table
from server import assert_valid_votable, error_text
from uws_client import module_client, module_server, results_of, wait_final

series_server = module_server("timeseries-state")
client = module_client(follow_redirects=True)
VIS = {"BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB"}


@pytest.fixture(scope="module")
def variable(variable_star: dict[str, str]) -> tuple[str, str]:
    return variable_star["ra"], variable_star["dec"]


@pytest.fixture(scope="module")
def finished(series_server, client, variable):
    data = {"SERIES": "stack,cube,lightcurve", "RA": variable[0], "DEC": variable[1],
            "SIZE": "31", "APERTURE": "1.5", "ANNULUS": "2.5 4", "PHASE": "RUN", **VIS}
    response = client.post(series_server.url("async"), data=data)
    assert response.status_code == 200, response.text
    url = str(response.url)
    job = pyvo.dal.AsyncTAPJob(url)  # a real UWS client polls it
    job.wait(phases={"COMPLETED", "ERROR", "ABORTED"}, timeout=300)
    assert job.phase == "COMPLETED", job.phase
    return url, results_of(wait_final(client, url))


def test_job_publishes_stack_stamps_epochs_cube_and_light_curve(finished, client) -> None:
    _, results = finished
    assert {"stack", "epochs", "cube", "lightcurve", "lightcurve-png"} <= set(results)
    stamps = sorted(name for name in results if name.startswith("epoch-"))
    assert stamps == [f"epoch-{n:03d}" for n in range(1, 21)]
    stack = fits.open(io.BytesIO(client.get(results["stack"][0]).content))
    assert len(stack["EPOCHS"].data) == 20
    one = fits.open(io.BytesIO(client.get(results["epoch-007"][0]).content))
    assert np.array_equal(one[1].data, stack["EPOCH7"].data)
    assert one[1].header["MJD-OBS"] == stack["EPOCH7"].header["MJD-OBS"]
    cube = fits.open(io.BytesIO(client.get(results["cube"][0]).content))
    assert cube["CUBE"].data.shape == (20, 31, 31)
    png = client.get(results["lightcurve-png"][0])
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_epochs_and_light_curve_are_valid_votables(finished, client, demo_archive) -> None:
    _, results = finished
    epochs = assert_valid_votable(client.get(results["epochs"][0]).content)
    table = epochs.get_first_table().to_table()
    assert list(table["status"]) == ["ok"] * 20 and list(table["epoch"]) == list(range(1, 21))
    curve = assert_valid_votable(client.get(results["lightcurve"][0]).content)
    flux = curve.get_first_table().to_table()
    with open(demo_archive / "variable.csv", newline="") as handle:
        truth = np.array([float(row["flux_uJy"]) for row in csv.DictReader(handle)])
    assert np.all(np.abs(np.array(flux["flux"]) - truth) < 3.5 * np.array(flux["flux_err"]))
    assert curve.get_first_table().get_field_by_id("time").ucd == "time.epoch"


def test_moving_target_job_from_an_uploaded_ephemeris(series_server, client,
                                                      demo_archive) -> None:
    ephemeris = (demo_archive / "asteroid.csv").read_bytes()
    response = client.post(series_server.url("async"), data={
        "SERIES": "stack", "UPLOAD": "eph,param:eph", "SIZE": "15", "PHASE": "RUN", **VIS},
        files={"eph": ("asteroid.csv", ephemeris, "text/csv")})
    assert response.status_code == 200, response.text
    root = wait_final(client, str(response.url))
    results = results_of(root)
    epochs = parse_single_table(io.BytesIO(client.get(results["epochs"][0]).content))
    table = epochs.to_table()
    assert set(table["kind"]) == {"path"}
    assert {"ok", "no-overlap"} <= set(table["status"])  # off-image epochs are listed
    for row in table[table["status"] == "ok"]:
        url = results[f"epoch-{row['epoch']:03d}"][0]
        stamp = fits.open(io.BytesIO(client.get(url).content))[1]
        peak_y, peak_x = np.unravel_index(np.nanargmax(stamp.data), stamp.data.shape)
        assert abs(peak_x + 1 - row["target_x"]) <= 1 and abs(peak_y + 1 - row["target_y"]) <= 1


@pytest.mark.parametrize(("data", "words"), [
    ({"SERIES": "movie", "RA": "53.3", "DEC": "-27.85"}, "SERIES must list"),
    ({"SERIES": "stack", "RA": "53.3"}, "give both RA and DEC"),
    ({"SERIES": "stack", "RA": "53.3", "DEC": "-27.85", "SIZE_UNIT": "furlong"}, "SIZE_UNIT"),
    ({"SERIES": "stack", "RA": "53.3", "DEC": "-27.85", "TIME": "60400"}, "TIME needs 2"),
    ({"SERIES": "stack", "RA": "53.3", "DEC": "-27.85", "APERTURE": "3",
      "ANNULUS": "2 4"}, "annulus must lie outside"),
    ({"SERIES": "stack", "PHASE": "RUN"}, "needs RA and DEC, or an ephemeris"),
    ({"SERIES": "stack", "RA": "53.3", "DEC": "-27.85", "SPEED": "3"}, "unknown parameter"),
])
def test_bad_time_series_jobs_are_refused_with_what_to_fix(series_server, client, data,
                                                           words) -> None:
    response = client.post(series_server.url("async"), data=data)
    assert response.status_code == 400, response.text
    assert words in error_text(response)


def test_catalog_job_time_restricts_the_images(series_server, client, variable,
                                               demo_archive) -> None:
    with open(demo_archive / "variable.csv", newline="") as handle:
        mids = [float(row["mjd_mid"]) for row in csv.DictReader(handle)]
    catalog = f"name,ra,dec\nvar,{variable[0]},{variable[1]}\n".encode()
    response = client.post(series_server.url("async"), data={
        "UPLOAD": "cat,param:cat", "SIZE": "16", "PHASE": "RUN", "RESPONSEFORMAT": "fits",
        "TIME": [f"{mids[2] - 0.1} {mids[4] + 0.1}", f"{mids[10]} {mids[10]}"], **VIS},
        files={"cat": ("targets.csv", catalog, "text/csv")})
    assert response.status_code == 200, response.text
    results = results_of(wait_final(client, str(response.url)))
    manifest = assert_valid_votable(client.get(results["manifest"][0]).content)
    images = set(manifest.get_first_table().to_table()["image_id"])
    assert len(images) == 4  # epochs 3, 4, 5 and 11 of 20
    assert all("/EPOCHS/" in image for image in images)


def test_catalog_job_refuses_a_bad_time(series_server, client) -> None:
    response = client.post(series_server.url("async"), data={
        "UPLOAD": "cat,param:cat", "TIME": "60500 60400"},
        files={"cat": ("targets.csv", b"ra,dec\n53.3,-27.85\n", "text/csv")})
    assert response.status_code == 400 and "TIME" in error_text(response)


def test_stilts_votlint_accepts_the_epochs_and_light_curve(finished, client, stilts,
                                                           tmp_path) -> None:
    from stilts_runner import votlint

    _, results = finished
    for name in ("epochs", "lightcurve"):
        document = tmp_path / f"{name}.xml"
        document.write_bytes(client.get(results[name][0]).content)
        assert votlint(stilts, document) == [], name


@pytest.mark.parametrize(("content", "words"), [
    (b"mjd,ra,dec\n60000,53.3,-27.8\n60000,53.31,-27.8\n", "same time"),
    (b"when,ra,dec\nsoon,53.3,-27.8\n", "needs a time column"),
    (b"mjd,ra,dec\n60000,400,-27.8\n", "RA 400"),
    (b"\x00\x01garbage", "UPLOAD eph"),
])
def test_a_bad_ephemeris_is_refused_at_once(series_server, client, content, words) -> None:
    response = client.post(series_server.url("async"), data={
        "SERIES": "stack", "UPLOAD": "eph,param:eph"},
        files={"eph": ("eph.csv", content, "text/csv")})
    assert response.status_code == 400, response.text
    assert words in error_text(response)
