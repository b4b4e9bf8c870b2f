"""The web page's helper endpoints (``/api/...``) through a real server, without a browser."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from astropy.io import fits
from astropy.io.votable import from_table, writeto
from astropy.table import Table
from PIL import Image
from server import LiveServer, assert_valid_votable, query_status, start_server

from vo_service.config import Limits, Settings

MAX_ROWS = 20
OUTSIDE = ("far-away", "150.0", "60.0")  # in no image of the demo archive


def sources(demo_archive: Path, count: int) -> list[dict[str, str]]:
    with open(demo_archive / "sources.csv", newline="") as handle:
        return list(csv.DictReader(handle))[:count]


def csv_catalog(rows: list[dict[str, str]], extra: tuple[str, str, str] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "ra", "dec", "mag"])
    for row in rows:
        writer.writerow([f"src{row['id']}", row["ra"], row["dec"], row["mag_VIS"]])
    if extra:
        writer.writerow([*extra, "20"])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A private server (it runs jobs) with a small upload row limit."""
    settings = Settings(data_roots=(demo_archive,), state_dir=tmp_path_factory.mktemp("web-api"),
                        limits=Limits(max_upload_rows=MAX_ROWS))
    live = start_server(settings)
    yield live
    live.stop()


def dali_message(response: httpx.Response) -> str:
    status, text = query_status(assert_valid_votable(response.content))
    assert status == "ERROR"
    return text


def test_facets_list_each_instrument_with_its_bands_blue_to_red(server: LiveServer) -> None:
    answer = httpx.get(server.url("api/facets")).json()
    assert answer["collections"] == ["EUCLID-DEMO"]
    instruments = {i["name"]: i for i in answer["instruments"]}
    assert set(instruments) == {"VIS", "NISP", "DECAM"}
    nisp_bands = [b["name"] for b in instruments["NISP"]["bands"] if b["name"] != "RGS"]
    assert nisp_bands == ["NIR-Y", "NIR-J", "NIR-H"]
    assert [b["name"] for b in instruments["DECAM"]["bands"]] == ["DES-G", "DES-R", "DES-I",
                                                                  "DES-Z"]
    assert instruments["VIS"]["product_types"] == ["BGSUB", "RMS", "FLAG", "BGMOD",
                                                   "CATALOG-PSF"]
    assert answer["default_product_types"] == ["BGSUB", "CATALOG-PSF"]
    assert answer["catalog_product_types"] == ["CATALOG"]
    assert answer["psf_product_types"] == ["CATALOG-PSF"]
    assert answer["limits"]["max_upload_rows"] == MAX_ROWS


def test_catalog_description_preselects_columns_in_every_format(
        server: LiveServer, demo_archive: Path) -> None:
    rows = sources(demo_archive, 5)
    table = Table({"Name": [f"s{r['id']}" for r in rows],
                   "alpha": [float(r["ra"]) for r in rows],
                   "delta": [float(r["dec"]) for r in rows]})
    votable = from_table(table)
    fields = votable.get_first_table().fields
    fields[1].ucd, fields[2].ucd = "pos.eq.ra;meta.main", "pos.eq.dec;meta.main"
    fields[1].unit = fields[2].unit = "deg"
    xml = io.BytesIO()
    writeto(votable, xml)
    fits_table = io.BytesIO()
    fits.BinTableHDU(Table({"ID": [1, 2], "RAJ2000": [52.9, 52.91], "DEJ2000": [-28.1, -28.1]})
                     ).writeto(fits_table)
    cases = [("t.csv", csv_catalog(rows), "csv", ("ra", "dec", "name"), 5),
             ("t.xml", xml.getvalue(), "votable", ("alpha", "delta", "Name"), 5),
             ("t.fits", fits_table.getvalue(), "fits", ("RAJ2000", "DEJ2000", "ID"), 2)]
    for filename, content, fmt, chosen, count in cases:
        response = httpx.post(server.url("api/catalog"), files={"catalog": (filename, content)})
        assert response.status_code == 200, response.text
        summary = response.json()
        assert summary["format"] == fmt and summary["n_rows"] == count
        assert (summary["ra_column"], summary["dec_column"], summary["id_column"]) == chosen
        assert summary["filename"] == filename
        assert chosen[0] in [c["name"] for c in summary["columns"]]


def test_unusable_catalogs_are_refused_in_words(server: LiveServer, demo_archive: Path) -> None:
    garbage = httpx.post(server.url("api/catalog"),
                         files={"catalog": ("x.csv", b"\x00\x01\x02binary" * 10)})
    assert garbage.status_code == 400
    assert "unrecognised catalog format" in dali_message(garbage)
    too_many = httpx.post(server.url("api/catalog"), files={
        "catalog": ("big.csv", csv_catalog(sources(demo_archive, MAX_ROWS + 1)))})
    assert too_many.status_code == 400
    assert str(MAX_ROWS) in dali_message(too_many)
    nothing = httpx.post(server.url("api/catalog"), data={"x": "1"})
    assert nothing.status_code == 400 and "choose a catalog file" in dali_message(nothing)


def test_a_readable_catalog_without_usable_rows_is_described_and_refused_as_a_job(
        server: LiveServer) -> None:
    """README: /api/catalog describes any readable file (the page lets the user pick other
    columns); which rows are usable is decided when the job is created, in words."""
    cases = {"words": (b"id,ra,dec\na,x,y\nb,north,south\n", "ra", "cannot read RA 'x'"),
             "off the sky": (b"id,ra,dec\na,400,95\n", "ra", "outside [0, 360)"),
             "no position column": (b"id,foo\na,1\n", None, "no RA and Dec column")}
    for name, (content, ra_column, reason) in cases.items():
        described = httpx.post(server.url("api/catalog"), files={"catalog": ("t.csv", content)})
        assert described.status_code == 200, (name, described.text[-300:])
        summary = described.json()
        assert summary["ra_column"] == ra_column and summary["n_rows"] == content.count(b"\n") - 1
        job = httpx.post(server.url("async"), data={"UPLOAD": "cat,param:cat", "SIZE": "32"},
                         files={"cat": ("t.csv", content)})
        assert job.status_code == 400 and reason in dali_message(job), (name, job.text[-300:])


def test_images_at_a_position_given_in_degrees_or_sexagesimal(server: LiveServer) -> None:
    query = {"INSTRUMENT": "NISP", "PRODUCTTYPE": "BGSUB", "BANDNAME": ["NIR-Y", "NIR-H"]}
    degrees = httpx.get(server.url("api/images"), params={**query, "POS": "52.93 -28.09"}).json()
    sexagesimal = httpx.get(server.url("api/images"),
                            params={**query, "POS": "03:31:43.2 -28:05:24"}).json()
    assert sexagesimal["ra"] == pytest.approx(52.93) and sexagesimal["dec"] == pytest.approx(-28.09)
    assert [i["id"] for i in degrees["images"]] == [i["id"] for i in sexagesimal["images"]]
    assert {i["band"] for i in degrees["images"]} == {"NIR-Y", "NIR-H"}
    assert all(i["pixel_scale_arcsec"] == pytest.approx(0.4, rel=0.01) for i in degrees["images"])
    bad = httpx.get(server.url("api/images"), params={"POS": "north of the moon"})
    assert bad.status_code == 400 and "cannot read" in dali_message(bad)


def test_gallery_thumbnails_and_composite_of_a_finished_job(
        server: LiveServer, demo_archive: Path) -> None:
    catalog = csv_catalog(sources(demo_archive, 4), extra=OUTSIDE)
    with httpx.Client() as client:
        created = client.post(server.url("async"), files={"cat": ("t.csv", catalog)}, data={
            "UPLOAD": "cat,param:cat", "INSTRUMENT": "NISP",
            "BANDNAME": ["NIR-Y", "NIR-J", "NIR-H"], "PRODUCTTYPE": ["BGSUB", "RMS"],
            "SIZE": "32", "PHASE": "RUN"}, follow_redirects=True)
        job_id = str(created.url).rsplit("/", 1)[1]
        client.get(server.url(f"async/{job_id}"), params={"WAIT": "30", "PHASE": "EXECUTING"})
        client.get(server.url(f"async/{job_id}"), params={"WAIT": "30", "PHASE": "QUEUED"})
        gallery = client.get(server.url(f"api/jobs/{job_id}/gallery"),
                             params={"LIMIT": "10"}).json()
        assert gallery["ready"] and gallery["phase"] == "COMPLETED"
        assert [c["key"] for c in gallery["columns"]] == [
            "NIR-Y|BGSUB", "NIR-Y|RMS", "NIR-J|BGSUB", "NIR-J|RMS", "NIR-H|BGSUB", "NIR-H|RMS"]
        assert gallery["composite"] == {"bands": ["NIR-H", "NIR-J", "NIR-Y"],
                                        "product_type": "BGSUB"}
        targets = {t["target_id"]: t for t in gallery["targets"]}
        assert len(targets) == 5
        far = targets["far-away"]
        assert far["cells"] == {} and far["notes"][0]["status"] == "no-overlap"
        first = gallery["targets"][0]
        stamp = first["cells"]["NIR-J|BGSUB"][0]
        thumb = client.get(server.url(f"api/jobs/{job_id}/thumb/{stamp['result_id']}"),
                           params={"STRETCH": "log", "INVERT": "true", "SIZE": "64"})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(thumb.content)).size == (32, 32)
        linear = client.get(server.url(f"api/jobs/{job_id}/thumb/{stamp['result_id']}"))
        assert linear.content != thumb.content
        colour = client.get(server.url(f"api/jobs/{job_id}/composite/{first['row']}"))
        assert colour.status_code == 200
        assert Image.open(io.BytesIO(colour.content)).mode == "RGB"
        bad_stretch = client.get(server.url(f"api/jobs/{job_id}/thumb/{stamp['result_id']}"),
                                 params={"STRETCH": "cubic"})
        assert bad_stretch.status_code == 400 and "stretch" in dali_message(bad_stretch)
        jobs = client.get(server.url("api/jobs")).json()["jobs"]
        listed = next(j for j in jobs if j["job_id"] == job_id)
        assert listed["phase"] == "COMPLETED"
        assert listed["progress"]["done"] == listed["progress"]["total"] > 0
        assert listed["parameters"]["BANDNAME"] == ["NIR-Y", "NIR-J", "NIR-H"]


def test_unknown_jobs_and_stamps_are_404(server: LiveServer) -> None:
    for path in ("api/jobs/nope/gallery", "api/jobs/nope/thumb/x.fits",
                 "api/jobs/nope/composite/1"):
        response = httpx.get(server.url(path))
        assert response.status_code == 404
        assert "there is no job" in dali_message(response)


def test_gallery_of_a_job_without_manifest_says_so(server: LiveServer) -> None:
    catalog = csv_catalog([], extra=("one", "52.93", "-28.09"))
    pending = httpx.post(server.url("async"), files={"cat": ("t.csv", catalog)},
                         data={"UPLOAD": "cat,param:cat"}, follow_redirects=True)
    job_id = str(pending.url).rsplit("/", 1)[1]
    answer = httpx.get(server.url(f"api/jobs/{job_id}/gallery")).json()
    assert answer == {"job_id": job_id, "phase": "PENDING", "error": None, "ready": False}


def test_png_only_jobs_show_their_png_stamps(server: LiveServer, demo_archive: Path) -> None:
    catalog = csv_catalog(sources(demo_archive, 2))
    created = httpx.post(server.url("async"), files={"cat": ("t.csv", catalog)}, data={
        "UPLOAD": "cat,param:cat", "INSTRUMENT": "VIS", "PRODUCTTYPE": "BGSUB",
        "RESPONSEFORMAT": "png", "PHASE": "RUN"}, follow_redirects=True)
    job_id = str(created.url).rsplit("/", 1)[1]
    for phase in ("QUEUED", "EXECUTING"):
        httpx.get(server.url(f"async/{job_id}"), params={"WAIT": "30", "PHASE": phase})
    gallery = httpx.get(server.url(f"api/jobs/{job_id}/gallery")).json()
    stamps = [s for t in gallery["targets"] for s in t["cells"]["VIS|BGSUB"]]
    assert stamps and {s["content_type"] for s in stamps} == {"image/png"}
    png = httpx.get(server.url(f"async/{job_id}/results/{stamps[0]['result_id']}"))
    assert png.headers["content-type"] == "image/png"
    refused = httpx.get(server.url(f"api/jobs/{job_id}/thumb/{stamps[0]['result_id']}"))
    assert refused.status_code == 404 and "no FITS stamp" in dali_message(refused)
    assert gallery["composite"]["bands"] == []  # one band: no colour composite
