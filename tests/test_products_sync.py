"""PSF and catalog products through the real server: SIA finds them, DataLink describes
them, SODA /sync answers an ID of one with the PSF at the target or the catalog rows in the
stamp (pyvo as the client); errors are DALI errors."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import pyvo
from astropy import units as u
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.wcs import WCS
from pyvo.dal.adhoc import DatalinkResults
from server import LiveServer, assert_valid_votable
from uws_client import results_of, wait_final

import vo_service

FORNAX = (52.93, -28.09)  # inside tile 102018212 only
CIRCLE = "52.93 -28.09 0.002"


def _search(server: LiveServer, **constraints) -> list[dict]:
    found = pyvo.dal.SIA2Service(server.base_url).search(pos=(*FORNAX, 0.001), **constraints)
    return [{name: row[name] for name in ("obs_publisher_did", "dataproduct_type", "obs_id")}
            | {"links_url": row.getdataurl()} for row in found]


def sync(server: LiveServer, **params) -> httpx.Response:
    return httpx.get(server.url("sync"), params=params, timeout=60)


def test_pyvo_finds_a_psf_with_sia_and_gets_the_psf_at_its_target(
        live_server: LiveServer) -> None:
    (row,) = _search(live_server, BANDNAME="VIS", PRODUCTTYPE="CATALOG-PSF")
    assert row["dataproduct_type"] == "image"
    links = DatalinkResults.from_result_url(row["links_url"])
    (cutout,) = links.bysemantics("#cutout", include_narrower=False)
    assert "PSF at the centre" in cutout["description"]
    proc = links.get_first_proc()
    body = proc.processed(circle=(*FORNAX, 2 / 3600) * u.deg).read()
    with fits.open(io.BytesIO(body)) as served:
        (local,) = vo_service.psf(FORNAX, index=live_server.app.state.index, band="VIS")
        assert np.array_equal(served[0].data, local[0].data)
        assert served[0].header["PSFMETH"] == "nearest"
        assert served[0].header["RA_TARG"] == pytest.approx(FORNAX[0])
        assert served[0].header["PSFDIST"] == local[0].header["PSFDIST"]


def test_sync_interpolated_psf_and_the_cache(live_server: LiveServer) -> None:
    (row,) = _search(live_server, BANDNAME="NIR-J", PRODUCTTYPE="CATALOG-PSF")
    first = sync(live_server, ID=row["obs_publisher_did"], POS=f"CIRCLE {CIRCLE}",
                 PSF="interpolated")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(first.content)) as hdul:
        assert hdul[0].header["PSFMETH"] == "interpolated" and hdul[0].header["NPSF"] == 3
        assert float(hdul[0].data.sum()) == pytest.approx(1.0, abs=1e-5)
    again = sync(live_server, ID=row["obs_publisher_did"], POS=f"CIRCLE {CIRCLE}",
                 PSF="interpolated")
    assert again.headers["x-cache"] == "hit" and again.content == first.content
    # a target off the PSF's tile: no overlap
    assert sync(live_server, ID=row["obs_publisher_did"], CIRCLE="10 10 0.01").status_code == 204


def test_catalogs_are_measurements_and_sync_gives_the_rows_in_the_stamp(
        live_server: LiveServer) -> None:
    (row,) = _search(live_server, DPTYPE="measurements")
    assert row["dataproduct_type"] == "measurements"
    links = DatalinkResults.from_result_url(row["links_url"])
    assert not list(links.bysemantics("#preview", include_narrower=False))  # a table has no picture
    (image,) = [r for r in _search(live_server, BANDNAME="NIR-H", PRODUCTTYPE="BGSUB")
                if "MEF" not in r["obs_publisher_did"]]
    stamp = sync(live_server, ID=image["obs_publisher_did"], CIRCLE=CIRCLE)
    rows = sync(live_server, ID=row["obs_publisher_did"], CIRCLE=CIRCLE,
                RESPONSEFORMAT="votable", COLUMNS="OBJECT_ID, RIGHT_ASCENSION,DECLINATION")
    assert rows.status_code == 200, rows.text
    assert rows.headers["content-type"].startswith("application/x-votable+xml")
    assert_valid_votable(rows.content)
    table = parse_single_table(io.BytesIO(rows.content)).to_table()
    assert table.colnames == ["OBJECT_ID", "RIGHT_ASCENSION", "DECLINATION", "x_stamp",
                              "y_stamp"]
    # the matching image is the finest-pixelled one of the tile (VIS); its stamp of the
    # same circle is the footprint, checked with astropy on the whole catalog
    vis = [r for r in _search(live_server, BANDNAME="VIS", PRODUCTTYPE="BGSUB")
           if "MEF" not in r["obs_publisher_did"]][0]
    vis_stamp = fits.getheader(io.BytesIO(sync(live_server, ID=vis["obs_publisher_did"],
                                               CIRCLE=CIRCLE).content))
    record = live_server.app.state.index.get(row["obs_publisher_did"])
    everything = fits.getdata(record.path, "CATALOG")
    x, y = WCS(vis_stamp).all_world2pix(everything["RIGHT_ASCENSION"],
                                        everything["DECLINATION"], 1)
    inside = ((x >= 0.5) & (x < vis_stamp["NAXIS1"] + 0.5) & (y >= 0.5)
              & (y < vis_stamp["NAXIS2"] + 0.5))
    assert sorted(table["OBJECT_ID"]) == sorted(everything["OBJECT_ID"][inside])
    assert len(table) >= 2
    order = np.argsort(everything["OBJECT_ID"][inside])
    by_id = np.argsort(table["OBJECT_ID"])
    assert np.allclose(table["x_stamp"][by_id], x[inside][order], atol=1e-6)
    assert np.allclose(table["y_stamp"][by_id], y[inside][order], atol=1e-6)
    assert stamp.status_code == 200  # the NIR-H image of the same tile cuts the same circle
    # FITS table, all columns
    fits_rows = sync(live_server, ID=row["obs_publisher_did"], CIRCLE=CIRCLE)
    with fits.open(io.BytesIO(fits_rows.content)) as hdul:
        assert hdul[1].header["REFIMAGE"] == vis["obs_publisher_did"]
        assert len(hdul[1].data) == len(table)
        assert "MAG_VIS" in hdul[1].columns.names


@pytest.mark.parametrize(("params", "words"), [
    ({"PSF": "bilinear"}, "PSF must be nearest or interpolated"),
    ({"RESPONSEFORMAT": "votable"}, "a PSF is answered as FITS"),
    ({"RESPONSEFORMAT": "image/png"}, "a PSF is answered as FITS"),
])
def test_psf_request_errors_say_what_to_fix(live_server: LiveServer, params: dict,
                                           words: str) -> None:
    (row,) = _search(live_server, BANDNAME="VIS", PRODUCTTYPE="CATALOG-PSF")
    response = sync(live_server, ID=row["obs_publisher_did"], CIRCLE=CIRCLE, **params)
    assert response.status_code == 400  # text/plain, or a VOTable when one was asked for
    assert f"UsageError: {words}" in response.text


def test_catalog_and_mixed_request_errors(live_server: LiveServer) -> None:
    (catalog,) = _search(live_server, DPTYPE="measurements")
    (psf,) = _search(live_server, BANDNAME="VIS", PRODUCTTYPE="CATALOG-PSF")
    unknown = sync(live_server, ID=catalog["obs_publisher_did"], CIRCLE=CIRCLE,
                   COLUMNS="OBJECT_ID,NO_SUCH")
    assert unknown.status_code == 400 and "no column(s) NO_SUCH" in unknown.text
    assert "MAG_VIS" in unknown.text  # the message lists the columns there are
    two = httpx.get(live_server.url("sync"), timeout=60, params=[
        ("ID", catalog["obs_publisher_did"]), ("ID", psf["obs_publisher_did"]),
        ("CIRCLE", CIRCLE)])
    assert two.status_code == 400 and "one ID at a time" in two.text
    image = sync(live_server, ID=_search(live_server, BANDNAME="VIS",
                                         PRODUCTTYPE="RMS")[0]["obs_publisher_did"],
                 CIRCLE=CIRCLE, RESPONSEFORMAT="votable")
    assert image.status_code == 400 and "VOTable is for catalog products" in image.text
    assert sync(live_server, ID=catalog["obs_publisher_did"],
                CIRCLE="10 10 0.01").status_code == 204


def test_a_soda_job_answers_a_psf_id_with_the_psf(live_server: LiveServer) -> None:
    (row,) = _search(live_server, BANDNAME="VIS", PRODUCTTYPE="CATALOG-PSF")
    with httpx.Client(timeout=120) as client:
        created = client.post(live_server.url("async"), follow_redirects=True, data={
            "ID": row["obs_publisher_did"], "CIRCLE": [CIRCLE, "10 10 0.01"], "PHASE": "RUN"})
        root = wait_final(client, str(created.url))
        results = results_of(root)
        psf = client.get(results["cutout-1"][0]).content
        assert client.get(results["cutout-2"][0]).text.startswith("UsageError: no overlap")
    with fits.open(io.BytesIO(psf)) as served:
        assert served[0].header["PSFMETH"] == "nearest"
        assert served[0].data.shape == (served[0].header["STMPSIZE"],) * 2
