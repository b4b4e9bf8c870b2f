"""Catalog jobs with the whole product matrix: CATALOG-PSF and CATALOG columns beside
BGSUB, RMS and FLAG in the manifest and the ZIP, and photometry on the stamps."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.wcs import WCS
from server import assert_valid_votable
from uws_client import UWS, module_client, module_server, results_of, wait_final

import vo_service

BANDS = ["VIS", "NIR-H"]
TILE = "102018212"
products_server = module_server("products-jobs-state")
client = module_client()


def _sources(demo_archive: Path) -> list[dict]:
    with open(demo_archive / "sources.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["field"] == "EDF-FORNAX"]


def _tile_image(demo_archive: Path, band: str, product: str = "BGSUB") -> Path:
    return (demo_archive / "euclid" / f"TILE{TILE}"
            / f"EUC_MER_{product}-MOSAIC-{band}_TILE{TILE}.fits")


def _isolated_stars(demo_archive: Path, low: float, high: float) -> list[dict]:
    """Stars of VIS magnitude in [low, high) well inside the central tile, with no source
    within 5 arcsec that is less than 5 magnitudes fainter."""
    rows = _sources(demo_archive)
    ra = np.array([float(r["ra"]) for r in rows])
    dec = np.array([float(r["dec"]) for r in rows])
    mag = np.array([float(r["mag_VIS"]) for r in rows])
    header = fits.getheader(_tile_image(demo_archive, "NIR-H"))
    x, y = WCS(header).all_world2pix(ra, dec, 0)
    chosen = []
    for k, row in enumerate(rows):
        if row["type"] != "star" or not low <= mag[k] < high:
            continue
        if not (60 < x[k] < header["NAXIS1"] - 60 and 60 < y[k] < header["NAXIS2"] - 60):
            continue
        distance = np.hypot((ra - ra[k]) * math.cos(math.radians(dec[k])), dec - dec[k]) * 3600
        if np.sum((distance < 5) & (mag < mag[k] + 5)) == 1:
            chosen.append(row)
    return chosen


@pytest.fixture(scope="module")
def targets(demo_archive: Path) -> dict[str, tuple[float, float]]:
    chosen = {f"star{row['id']}": (float(row["ra"]), float(row["dec"]))
              for row in _isolated_stars(demo_archive, 18.6, 21.0)[:6]}
    (bright,) = _isolated_stars(demo_archive, 16.0, 18.5)[:1] or [None]
    assert bright is not None
    chosen[f"bright{bright['id']}"] = (float(bright["ra"]), float(bright["dec"]))
    header = fits.getheader(_tile_image(demo_archive, "VIS"))
    edge_ra, edge_dec = WCS(header).all_pix2world([header["NAXIS1"] / 2], [2.0], 0)
    chosen["edge"] = (float(edge_ra[0]), float(edge_dec[0]))
    assert len(chosen) >= 6
    return chosen


@pytest.fixture(scope="module")
def finished(products_server, client, targets):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "ra", "dec"])
    for name, (ra, dec) in targets.items():
        writer.writerow([name, f"{ra:.9f}", f"{dec:.9f}"])
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": BANDS, "SIZE": "64",
            "PRODUCTTYPE": ["BGSUB", "RMS", "FLAG", "CATALOG-PSF", "CATALOG"],
            "PHOTOMETRY": "true", "APERTURE": ["1.5", "0.5"], "ANNULUS": "3 4.5",
            "COLUMNS": "OBJECT_ID,RIGHT_ASCENSION,DECLINATION,MAG_VIS", "PHASE": "RUN"}
    response = client.post(products_server.url("async"), data=data, follow_redirects=True,
                           files={"cat": ("targets.csv", out.getvalue().encode(), "text/csv")})
    assert response.status_code == 200, response.text
    root = wait_final(client, str(response.url))
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    results = results_of(root)
    manifest = parse_single_table(io.BytesIO(client.get(results["manifest"][0]).content))
    bundle = zipfile.ZipFile(io.BytesIO(client.get(results["bundle"][0]).content))
    return results, manifest.to_table(), bundle


def test_manifest_and_zip_hold_psf_and_catalog_columns(finished, targets) -> None:
    results, table, bundle = finished
    for name in targets:
        rows = table[table["target_id"] == name]
        kinds = sorted((str(r["band"]) if r["band"] else "", str(r["product_type"]))
                       for r in rows if r["status"] in ("ok", "partial"))
        # each band: BGSUB, RMS, FLAG and its PSF; the tile: its catalog (no band)
        for band in BANDS:
            for product in ("BGSUB", "RMS", "FLAG", "CATALOG-PSF"):
                assert (band, product) in kinds, (name, band, product)
        assert ("", "CATALOG") in kinds
    names = bundle.namelist()
    assert "manifest.xml" in names and "photometry.xml" in names
    assert_valid_votable(bundle.read("manifest.xml"))  # with its photometry FIELDs
    for row in table[table["product_type"] == "CATALOG-PSF"]:
        assert str(row["file"]).startswith(str(row["band"]) + "/") and str(row["file"]) in names
        assert row["content_type"] == "application/fits"
    for row in table[table["product_type"] == "CATALOG"]:
        assert str(row["file"]).startswith("catalogs/") and str(row["file"]) in names


def test_psf_column_is_the_psf_at_each_target(finished, targets, products_server) -> None:
    _, table, bundle = finished
    index = products_server.app.state.index
    checked = 0
    for row in table[(table["product_type"] == "CATALOG-PSF") & (table["band"] == "NIR-H")]:
        if TILE not in str(row["image_id"]):
            continue
        with fits.open(io.BytesIO(bundle.read(str(row["file"])))) as stamp:
            (local,) = [h for h in vo_service.psf((row["ra"], row["dec"]), index=index,
                                                  band="NIR-H")
                        if h[0].header["ORIGFILE"] in str(row["image_id"])]
            assert np.array_equal(stamp[0].data, local[0].data)
            assert stamp[0].header["PSFMETH"] == "nearest"
        checked += 1
    assert checked >= 5


def test_catalog_column_holds_exactly_the_rows_in_the_stamp(finished, demo_archive) -> None:
    _, table, bundle = finished
    everything = fits.getdata(demo_archive / "euclid" / f"TILE{TILE}"
                              / f"EUC_MER_FINAL-CAT_TILE{TILE}.fits", "CATALOG")
    checked = 0
    for row in table[table["product_type"] == "CATALOG"]:
        if TILE not in str(row["image_id"]) or row["status"] != "ok":
            continue
        rows = fits.getdata(io.BytesIO(bundle.read(str(row["file"]))), 1)
        assert rows.columns.names == ["OBJECT_ID", "RIGHT_ASCENSION", "DECLINATION", "MAG_VIS",
                                      "x_stamp", "y_stamp"]
        # the footprint: the job's own VIS stamp of the same target (the first band)
        (vis,) = [r for r in table if r["target_id"] == row["target_id"]
                  and r["band"] == "VIS" and r["product_type"] == "BGSUB"
                  and TILE in str(r["image_id"])]
        stamp = fits.getheader(io.BytesIO(bundle.read(str(vis["file"]))))
        x, y = WCS(stamp).all_world2pix(everything["RIGHT_ASCENSION"],
                                        everything["DECLINATION"], 1)
        inside = ((x >= 0.5) & (x < stamp["NAXIS1"] + 0.5) & (y >= 0.5)
                  & (y < stamp["NAXIS2"] + 0.5))
        assert sorted(rows["OBJECT_ID"]) == sorted(everything["OBJECT_ID"][inside])
        order = np.argsort(rows["OBJECT_ID"])
        expected = np.argsort(everything["OBJECT_ID"][inside])
        assert np.allclose(rows["x_stamp"][order], x[inside][expected], atol=1e-6)
        checked += 1
    assert checked >= 5


def test_photometry_recovers_the_injected_fluxes(finished, demo_archive, client) -> None:
    results, table, _ = finished
    truth = {f"star{r['id']}": r for r in _sources(demo_archive)}
    photometry = assert_valid_votable(client.get(results["photometry"][0]).content)
    own = photometry.get_first_table().to_table()
    checked = 0
    for row in table[(table["product_type"] == "BGSUB") & (table["target_id"] != "edge")]:
        name = str(row["target_id"])
        if name not in truth or f"BGSUB-MOSAIC-{row['band']}_TILE{TILE}" not in row["image_id"]:
            continue  # the stars are well inside the central tile (not the smaller MEF)
        band = str(row["band"])
        injected = 10 ** ((23.9 - float(truth[name][f"mag_{band.replace('-', '_')}"])) / 2.5)
        assert row["phot_status"] == "ok" and row["phot_unit"] == "uJy"
        # aperture 1 is 0.5 arcsec, aperture 2 1.5 arcsec (radii are sorted)
        flux, error = float(row["flux_ap2"]), float(row["flux_err_ap2"])
        assert abs(flux - injected) < 4 * error + 0.02 * injected, (name, band)
        assert float(row["flux_ap1"]) < flux + 3 * error  # a smaller aperture holds less
        assert row["mag_ap2"] == pytest.approx(23.9 - 2.5 * math.log10(flux), abs=1e-9)
        assert row["mag_err_ap2"] == pytest.approx(1.0857 * error / flux, rel=1e-3)
        assert row["phot_flags"] & 4 == 0  # errors from the RMS product
        same = own[(own["target_id"] == name) & (own["band"] == band)
                   & (own["image_id"] == row["image_id"])]
        assert float(same["flux_ap2"][0]) == flux
        checked += 1
    assert checked >= 8


def test_photometry_flags_and_refusals(finished) -> None:
    _, table, _ = finished
    science = table[table["product_type"] == "BGSUB"]
    bright = science[[str(t).startswith("bright") and band == "VIS"
                      for t, band in zip(science["target_id"], science["band"], strict=True)]]
    assert len(bright) and all(int(v) & 8 for v in bright["phot_flag_bits"])  # STAR_HALO
    edge = science[science["target_id"] == "edge"]
    assert len(edge) and set(edge["phot_status"]) == {"clipped"}
    assert all("reaches past the stamp" in str(m) for m in edge["phot_message"])
    assert all(np.ma.is_masked(v) or math.isnan(v) for v in edge["flux_ap2"])
    assert set(table[table["product_type"] != "BGSUB"]["phot_status"].filled("")) <= {""}


def test_photometry_parameters_are_checked(products_server, client) -> None:
    for data, words in (({"PHOTOMETRY": "maybe"}, "PHOTOMETRY must be true or false"),
                        ({"APERTURE": "2"}, "need PHOTOMETRY=true"),
                        ({"PHOTOMETRY": "yes", "APERTURE": "-1"}, "positive"),
                        ({"PHOTOMETRY": "yes", "APERTURE": "2", "ANNULUS": "1 3"},
                         "inside the largest aperture"),
                        ({"PSF": "spline"}, "PSF must be nearest or interpolated"),
                        ({"PHOTOMETRY": "on", "PRODUCTTYPE": "RMS"},
                         "PHOTOMETRY measures on science stamps")):
        response = client.post(products_server.url("async"),
                               data={"UPLOAD": "cat,param:cat", **data})
        assert response.status_code == 400, (data, response.text)
        assert words in response.text
    accepted = client.post(products_server.url("async"), data={
        "PHOTOMETRY": "true", "APERTURE": "2 3", "APERTURE_UNIT": "pix"})
    assert accepted.status_code == 303  # a PENDING job, built up later

