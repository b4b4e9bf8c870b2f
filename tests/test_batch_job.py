"""Catalog (UPLOAD) batch jobs through the real server: manifest, stamps, bundle, limits."""

from __future__ import annotations

import csv
import io
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from server import assert_valid_votable
from uws_client import (
    UWS,
    job_document,
    job_results,
    module_client,
    module_server,
    results_of,
    wait_final,
    wait_for_results,
)

from vo_service.archive.index import ArchiveIndex
from vo_service.cache import CutoutCache
from vo_service.engine.api import cut
from vo_service.shapes import CenterSize

BANDS = ["VIS", "NIR-Y"]
OUTSIDE = [(10.0 + i, 10.0 + i) for i in range(8)]  # far from every demo field
BAD_ROWS = [("nan", "-28.1"), ("52.9", "95"), ("abc", "-28.1"), ("52.9", "")]


def demo_catalog(demo_archive: Path, n_sources: int = 488) -> bytes:
    """sources.csv rows, then targets outside every footprint, then bad rows (500 total)."""
    with open(demo_archive / "sources.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # the main field, plus the field seen at several epochs (same file names, other dates)
    epochs = [row for row in rows if int(row["id"]) >= 200_001][: n_sources // 10]
    sources = rows[: n_sources - len(epochs)] + epochs
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "ra", "dec"])
    for source in sources:
        writer.writerow([f"src{source['id']}", source["ra"], source["dec"]])
    for number, (ra, dec) in enumerate(OUTSIDE):
        writer.writerow([f"far{number}", ra, dec])
    for number, (ra, dec) in enumerate(BAD_ROWS):
        writer.writerow([f"bad{number}", ra, dec])
    return out.getvalue().encode()


def create(client: httpx.Client, server, data: dict, catalog: bytes | None,
           filename: str = "targets.csv") -> httpx.Response:
    files = {"cat": (filename, catalog, "text/csv")} if catalog is not None else None
    return client.post(server.url("async"), data=data, files=files, follow_redirects=True)


batch_server = module_server("batch-state")
client = module_client()


@pytest.fixture(scope="module")
def finished_job(batch_server, client, demo_archive):
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": BANDS, "PRODUCTTYPE": "BGSUB",
            "SIZE": "32", "WORKERS": "2", "PHASE": "RUN", "RUNID": "catalog-test"}
    response = create(client, batch_server, data, demo_catalog(demo_archive))
    assert response.status_code == 200, response.text
    url = str(response.url)
    return url, wait_final(client, url)


def test_catalog_job_completes_with_manifest_bundle_and_stamps(
    finished_job, client, batch_server, demo_archive
) -> None:
    url, root = finished_job
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    assert root.findtext("uws:endTime", namespaces=UWS)
    progress = root.find("uws:jobInfo/*", UWS)
    assert progress.get("done") == progress.get("total") != "0"
    params = [p.get("id") for p in root.iterfind("uws:parameters/uws:parameter", UWS)]
    assert params.count("BANDNAME") == 2 and "PHASE" not in params and "RUNID" not in params
    results = job_results(client, root)  # stamps: reached from the manifest
    ids = [r.get("id") for r in root.iterfind("uws:results/uws:result", UWS)]
    assert len(ids) == len(set(ids))
    assert set(ids) == {"manifest", "bundle", "coverage"}  # the job's products, no stamps
    assert results["manifest"][1] == "application/x-votable+xml"
    assert results["bundle"][1] == "application/zip"
    assert results["coverage"][1] == "application/fits"  # MOC of targets and stamps
    stamps = {k: v for k, v in results.items() if k not in ("manifest", "bundle", "coverage")}
    assert stamps and all(mime == "application/fits" for _, mime in stamps.values())

    manifest = assert_valid_votable(client.get(results["manifest"][0]).content)
    table = manifest.get_first_table().to_table()
    statuses = Counter(table["status"])
    assert set(statuses) <= {"ok", "partial", "no-overlap", "error"}
    by_target = {}
    for row in table:
        by_target.setdefault(str(row["target_id"]), []).append(row)
    assert len(by_target) == 500
    for number in range(len(BAD_ROWS)):
        (row,) = by_target[f"bad{number}"]
        assert row["status"] == "error" and row["message"]
    for number in range(len(OUTSIDE)):
        (row,) = by_target[f"far{number}"]
        assert row["status"] == "no-overlap"

    # each good target has exactly the images the index finds for it, in the chosen bands
    index = ArchiveIndex(batch_server.settings.index_path)
    good = table[[str(t).startswith("src") for t in table["target_id"]]]
    targets = sorted(set(zip(good["target_id"], good["ra"], good["dec"], strict=True)))
    ra = np.array([t[1] for t in targets])
    dec = np.array([t[2] for t in targets])
    expected = Counter()
    for position, record in index.lookup(ra, dec, band=BANDS, product_type="BGSUB"):
        expected[(str(targets[position][0]), record.obs_publisher_did)] += 1
    found = Counter((str(r["target_id"]), str(r["image_id"])) for r in good
                    if r["status"] != "no-overlap")
    assert found == expected
    assert set(good["band"]) <= set(BANDS) and set(good["product_type"]) == {"BGSUB"}
    assert len(stamps) == sum(1 for r in table if r["status"] in ("ok", "partial"))

    # stamps are byte-identical to single cutouts of the same target
    with_stamp = [r for r in table if r["status"] in ("ok", "partial")]
    for row in with_stamp[:: max(1, len(with_stamp) // 6)]:
        record = index.get(str(row["image_id"]))
        single = cut(record.path, record.hdu, CenterSize(float(row["ra"]), float(row["dec"]),
                                                         32, 32, "pix"))
        served = client.get(str(row["access_url"]))
        assert served.status_code == 200
        assert served.headers["content-type"].startswith("application/fits")
        assert served.content == single.fits_bytes()
        assert int(row["bytes"]) == len(served.content)

    # the bundle: one folder per band, every stamp, and the manifest
    bundle = client.get(results["bundle"][0])
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        names = archive.namelist()
        assert "manifest.xml" in names
        folders = {name.split("/")[0] for name in names if "/" in name}
        assert folders <= set(BANDS)
        assert len(names) == len(stamps) + 1
        assert archive.testzip() is None  # every member's CRC holds (units append in turn)
        first = with_stamp[0]
        assert archive.read(str(first["file"])) == client.get(str(first["access_url"])).content
        for row in with_stamp[1:: max(1, len(with_stamp) // 5)]:
            assert archive.read(str(row["file"])) == client.get(str(row["access_url"])).content

    # a stamp is served from the bundle, not a job-store row of its own: the owner's bytes
    # count it once, in the bundle
    service = batch_server.app.state.job_service
    job_id, stamp_id = url.rsplit("/", 1)[1], str(first["access_url"]).rsplit("/", 1)[1]
    assert service.store.result(job_id, stamp_id) is None
    assert service.result_file(job_id, stamp_id)[0].file == "bundle.zip"


def test_same_catalog_again_is_served_from_the_cache(
    finished_job, client, batch_server, demo_archive
) -> None:
    url, first_root = finished_job
    cache = CutoutCache(batch_server.settings.cache_dir, batch_server.settings.limits.cache_bytes)
    entries_before = cache.stats().entries
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": BANDS, "PRODUCTTYPE": "BGSUB",
            "SIZE": "32", "PHASE": "RUN"}
    response = create(client, batch_server, data, demo_catalog(demo_archive))
    root = wait_final(client, str(response.url))
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    assert cache.stats().entries == entries_before  # nothing was cut again
    first, second = job_results(client, first_root), job_results(client, root)
    assert set(first) == set(second)
    some = sorted(k for k in first if k.endswith(".fits"))[:3]
    for result_id in some:
        assert client.get(first[result_id][0]).content == client.get(second[result_id][0]).content


def test_a_deleted_job_takes_its_stamps_out_of_the_cache(batch_server, client,
                                                         demo_archive) -> None:
    """A job's new stamps are cached where they lie in its bundle (no second copy); the
    job deleted, the cache lets them go with it (the disk gets the space back), and the
    same catalog is cut again, to the same bytes. Links of a job gone without the cache
    hearing of it (deleted while it ran) go at the next sweep."""
    cache = CutoutCache(batch_server.settings.cache_dir, batch_server.settings.limits.cache_bytes)
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB",
            "SIZE": "27", "PHASE": "RUN"}  # a size no other test cuts: new stamps
    catalog = demo_catalog(demo_archive, 60)
    first = create(client, batch_server, data, catalog)
    first_root = wait_final(client, str(first.url))
    job_id = str(first.url).rsplit("/", 1)[1]
    assert job_id in cache.linked_groups()
    stamps = {key: client.get(url).content for key, (url, _) in
              job_results(client, first_root).items() if key.endswith(".fits")}
    assert len(stamps) > 10
    entries = cache.stats().entries
    assert client.delete(str(first.url)).status_code == 303
    assert job_id not in cache.linked_groups()
    assert cache.stats().entries < entries - len(stamps) // 2

    again = create(client, batch_server, data, catalog)
    again_root = wait_final(client, str(again.url))
    assert {key: client.get(url).content for key, (url, _) in
            job_results(client, again_root).items() if key.endswith(".fits")} == stamps
    again_id = str(again.url).rsplit("/", 1)[1]
    service = batch_server.app.state.job_service
    service.store.delete(again_id)  # gone behind the service's back
    service.sweep()
    assert again_id not in cache.linked_groups()


def test_png_previews_and_fits_both(batch_server, client, demo_archive) -> None:
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB",
            "SIZE": "8", "SIZE_UNIT": "arcsec", "RESPONSEFORMAT": "both", "PHASE": "RUN"}
    response = create(client, batch_server, data, demo_catalog(demo_archive, 10))
    root = wait_final(client, str(response.url))
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    mimes = Counter(mime for key, (_, mime) in job_results(client, root).items()
                    if key != "coverage")
    assert mimes["image/png"] == mimes["application/fits"] > 0
    manifest = assert_valid_votable(client.get(results_of(root)["manifest"][0]).content)
    table = manifest.get_first_table().to_table()
    row = next(r for r in table if r["status"] == "ok")
    preview = client.get(str(row["preview_url"]))
    assert preview.headers["content-type"] == "image/png"
    assert preview.content.startswith(b"\x89PNG")


def test_nothing_inside_any_footprint_is_an_error(batch_server, client) -> None:
    catalog = b"id,ra,dec\na,10,10\nb,11,11\n"
    response = create(client, batch_server, {"UPLOAD": "cat,param:cat", "PHASE": "RUN"}, catalog)
    root = wait_final(client, str(response.url))
    assert root.findtext("uws:phase", namespaces=UWS) == "ERROR"
    message = root.findtext("uws:errorSummary/uws:message", namespaces=UWS)
    assert message.startswith("UsageError: no overlap")
    assert "manifest" in results_of(root)
    assert client.get(f"{response.url}/error").status_code == 200


def test_non_ascii_target_ids_keep_the_manifest_valid(batch_server, client,
                                                      demo_archive) -> None:
    with open(demo_archive / "sources.csv", newline="") as handle:
        source = next(csv.DictReader(handle))
    names = ["Ω Cen", "NGC 5139 – core", "Äußerer Rand"]
    catalog = (f"name,ra,dec\n{names[0]},{source['ra']},{source['dec']}\n"
               f"{names[1]},10,10\n{names[2]},abc,-28\n").encode()
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB",
            "SIZE": "16", "PHASE": "RUN"}
    root = wait_final(client, str(create(client, batch_server, data, catalog).url))
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    manifest = assert_valid_votable(client.get(results_of(root)["manifest"][0]).content)
    table = manifest.get_first_table().to_table()
    statuses = {str(row["target_id"]): str(row["status"]) for row in table}
    assert statuses[names[1]] == "no-overlap" and statuses[names[2]] == "error"
    assert statuses[names[0]] in ("ok", "partial")


@pytest.mark.parametrize(("data", "catalog", "fragment"), [
    ({"UPLOAD": "cat,param:cat", "RA_COLUMN": "alpha"}, b"id,ra,dec\na,1,2\n", "alpha"),
    ({"UPLOAD": "cat,param:cat"}, b"\x00\x01\x02 not a table \xff", "UPLOAD cat"),
    ({"UPLOAD": "cat,param:cat", "PHASE": "RUN"}, None, "no file"),  # may come before RUN
    ({"UPLOAD": "cat,param:other"}, b"id,ra,dec\na,1,2\n", "other"),
    ({"UPLOAD": "cat,http://example.org/t.csv"}, b"id,ra,dec\na,1,2\n", "URLs"),
    ({"UPLOAD": "cat,param:cat", "WORKERS": "17"}, b"id,ra,dec\na,1,2\n", "WORKERS"),
    ({"UPLOAD": "cat,param:cat", "SIZE_UNIT": "furlong"}, b"id,ra,dec\na,1,2\n", "SIZE_UNIT"),
    ({"UPLOAD": "cat,param:cat", "RESPONSEFORMAT": "gif"}, b"id,ra,dec\na,1,2\n", "RESPONSE"),
    ({"UPLOAD": "cat,param:cat", "COLOUR": "red"}, b"id,ra,dec\na,1,2\n", "COLOUR"),
])
def test_unusable_requests_are_refused_at_creation(
    batch_server, client, data, catalog, fragment
) -> None:
    response = create(client, batch_server, data, catalog)
    assert response.status_code == 400, response.text
    votable = assert_valid_votable(response.content)
    status = votable.resources[0].infos[-1]
    assert status.value == "ERROR" and status.content.startswith("UsageError:")
    assert fragment in status.content


def test_a_catalog_job_is_built_up_with_pyvo_then_run(batch_server, client,
                                                      demo_archive) -> None:
    """Choices first, the catalog later (pyvo's AsyncTAPJob.upload: a multipart
    POST …/parameters with UPLOAD), then RUN."""
    from pyvo.dal import AsyncTAPJob, DALServiceError

    created = client.post(batch_server.url("async"), follow_redirects=True,
                          data={"BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB", "SIZE": "16"})
    assert created.status_code == 200, created.text
    job = AsyncTAPJob(str(created.url))
    assert job.phase == "PENDING"
    refused = client.post(f"{job.url}/phase", data={"PHASE": "RUN"})
    assert refused.status_code == 400
    text = assert_valid_votable(refused.content).resources[0].infos[-1].content
    assert text.startswith("UsageError: a catalog job needs UPLOAD=")
    with pytest.raises(DALServiceError):
        job.run()
    assert job.phase == "PENDING"
    # each value's syntax when it arrives: a bad size, a file that is not a catalog
    assert client.post(f"{job.url}/parameters", data={"SIZE": "-3"}).status_code == 400
    garbage = client.post(f"{job.url}/parameters", data={"UPLOAD": "cat,param:cat"},
                          files={"cat": ("t.csv", b"\x00\x01 not a table \xff")})
    assert garbage.status_code == 400 and b"UPLOAD cat" in garbage.content
    assert {p.id_: p.content for p in job.job.parameters} == {
        "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB", "SIZE": "16"}
    rows = list(csv.DictReader(io.StringIO(demo_catalog(demo_archive, 20).decode())))[:5]
    targets = Table({"name": [r["name"] for r in rows],
                     "ra": [float(r["ra"]) for r in rows],
                     "dec": [float(r["dec"]) for r in rows]})
    job.upload(cat=targets)  # a VOTable in the multipart part "cat"
    job.upload(cat=targets[:3])  # a second thought replaces it
    job.run()
    job.wait(timeout=120)
    job.raise_if_error()
    root = job_document(client, job.url)
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    assert [e.text for e in root.find("uws:jobInfo", UWS)][-1] == "batch"  # <vos:kind>
    manifest = assert_valid_votable(client.get(results_of(root)["manifest"][0]).content)
    table = manifest.get_first_table().to_table()
    assert {str(t) for t in table["target_id"]} == {r["name"] for r in rows[:3]}
    assert set(table["band"]) == {"VIS"}
    stamps = table[[str(s) in ("ok", "partial") for s in table["status"]]]
    assert len(stamps) >= 1
    with fits.open(io.BytesIO(client.get(str(stamps[0]["access_url"])).content)) as stamp:
        assert stamp[0].data.shape == (16, 16)
    job.delete()


def test_more_rows_than_the_limit_are_refused(batch_server, client) -> None:
    rows = "".join(f"t{i},{i % 360},{(i % 170) - 85}\n" for i in range(10_001))
    response = create(client, batch_server, {"UPLOAD": "cat,param:cat"},
                      ("id,ra,dec\n" + rows).encode())
    assert response.status_code == 400
    assert b"10000" in response.content or b"10,000" in response.content


def test_abort_stops_a_big_job_and_keeps_what_was_finished(
    batch_server, client, demo_archive
) -> None:
    catalog = demo_catalog(demo_archive, 1900)
    data = {"UPLOAD": "cat,param:cat", "SIZE": "48", "WORKERS": "1", "PHASE": "RUN"}
    response = create(client, batch_server, data, catalog)
    url = str(response.url)
    for _ in range(600):
        root = job_document(client, url)
        if len(job_results(client, root)) >= 5:  # stamps in the manifest so far
            break
        time.sleep(0.05)
    assert root.findtext("uws:phase", namespaces=UWS) == "EXECUTING"
    client.post(f"{url}/phase", data={"PHASE": "ABORT"})
    root = job_document(client, url)
    assert root.findtext("uws:phase", namespaces=UWS) == "ABORTED"
    for _ in range(200):  # the job winds down: manifest of the finished stamps, then stops
        results = results_of(job_document(client, url))
        if "bundle" in results:  # the manifest (listed while running) is final by then
            break
        time.sleep(0.05)
    assert "bundle" in results and "manifest" in results
    progress = job_document(client, url).find("uws:jobInfo/*", UWS)
    assert int(progress.get("done")) < int(progress.get("total"))
    manifest = assert_valid_votable(client.get(results["manifest"][0]).content)
    stamps = [r for r in manifest.get_first_table().to_table() if r["status"] == "ok"]
    assert stamps and all(client.get(str(r["access_url"])).status_code == 200
                          for r in stamps[:3])


class Members(dict):
    """A stamp sink of a unit (as the job's bundle is): member name -> bytes."""

    def add(self, name: str, chunks, crc: int | None = None) -> None:
        self[name] = b"".join(chunks)
        assert crc is None or crc == zlib.crc32(self[name])  # a CRC given is the bytes' own


def _first_sources(demo_archive: Path, n: int) -> list[dict]:
    with open(demo_archive / "sources.csv", newline="") as handle:
        return list(csv.DictReader(handle))[:n]


def test_votable_and_fits_catalogs_with_chosen_and_detected_columns(
    batch_server, client, demo_archive
) -> None:
    from astropy.io import fits
    from astropy.io.votable import from_table
    from astropy.table import Table

    sources = _first_sources(demo_archive, 6)
    table = Table({"objname": [f"obj{s['id']}" for s in sources],
                   "alpha": [float(s["ra"]) for s in sources],
                   "delta": [float(s["dec"]) for s in sources],
                   "size_arcsec": [3.0] * len(sources)})
    fits_bytes = io.BytesIO()
    fits.BinTableHDU(table).writeto(fits_bytes)
    votable_bytes = io.BytesIO()
    table["alpha"].unit = table["delta"].unit = "deg"
    votable = from_table(table)
    fields = votable.get_first_table().fields
    fields[1].ucd, fields[2].ucd = "pos.eq.ra;meta.main", "pos.eq.dec;meta.main"
    votable.to_xml(votable_bytes)
    cases = [
        # FITS table: columns named by the request, size from the chosen column (arcsec)
        (fits_bytes.getvalue(), "targets.fits",
         {"RA_COLUMN": "alpha", "DEC_COLUMN": "delta", "ID_COLUMN": "objname",
          "SIZE_COLUMN": "size_arcsec"}),
        # VOTable: RA/Dec found by UCD, ID and size column by name
        (votable_bytes.getvalue(), "targets.xml", {}),
    ]
    for content, filename, columns in cases:
        data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB",
                "PHASE": "RUN", **columns}
        response = create(client, batch_server, data, content, filename)
        assert response.status_code == 200, response.text
        root = wait_final(client, str(response.url))
        assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        manifest = assert_valid_votable(client.get(results_of(root)["manifest"][0]).content)
        rows = manifest.get_first_table().to_table()
        assert {str(t) for t in rows["target_id"]} == set(table["objname"])
        row = next(r for r in rows if r["status"] == "ok")
        served = fits.getheader(io.BytesIO(client.get(str(row["access_url"])).content))
        index = ArchiveIndex(batch_server.settings.index_path)
        record = index.get(str(row["image_id"]))
        single = cut(record.path, record.hdu,
                     CenterSize(float(row["ra"]), float(row["dec"]), 3.0, 3.0, "arcsec"))
        assert served["NAXIS1"] == single.pixel_box.x1 - single.pixel_box.x0


@pytest.mark.slow
def test_restart_during_a_batch_job_resumes_it(
    demo_archive: Path, tmp_path: Path, client, monkeypatch
) -> None:
    from server import serve_archive

    from vo_service.jobs import batch
    from vo_service.jobs.store import JobStore

    monkeypatch.setattr(batch, "CHUNK_TARGETS", 4)  # many small units: the stop lands mid-job
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": BANDS, "PRODUCTTYPE": "BGSUB",
            "WORKERS": "1", "PHASE": "RUN"}
    with serve_archive(demo_archive, tmp_path) as server:
        response = create(client, server, data, demo_catalog(demo_archive, 200))
        url, old_base = str(response.url), server.base_url
        wait_for_results(client, url, 3, pause=0.02)
    job_id = url.rsplit("/", 1)[1]
    store = JobStore(tmp_path / "jobs")
    interrupted = store.get(job_id)
    store.close()
    assert interrupted.phase.value == "EXECUTING"  # a clean stop leaves it to be resumed
    with serve_archive(demo_archive, tmp_path) as server:
        root = wait_final(client, url.replace(old_base, server.base_url))
        assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        progress = root.find("uws:jobInfo/*", UWS)
        assert progress.get("done") == progress.get("total")
        results = results_of(root)
        ids = [r.get("id") for r in root.iterfind("uws:results/uws:result", UWS)]
        assert len(ids) == len(set(ids))
        manifest = assert_valid_votable(client.get(results["manifest"][0]).content)
        table = manifest.get_first_table().to_table()
        assert len({str(t) for t in table["target_id"]}) == 200 + len(OUTSIDE) + len(BAD_ROWS)


def test_png_stamps_show_physical_values_with_blank_as_missing(tmp_path: Path) -> None:
    """Previews of scaled integer images apply BSCALE/BZERO and leave BLANK pixels out
    (the same picture as a preview of the physical values), not the raw integers."""
    from types import SimpleNamespace

    from astropy.wcs import WCS
    from PIL import Image

    from tests import fits_factory
    from vo_service.engine.preview import render_preview
    from vo_service.jobs.batch_cut import StampTask, Target, cut_task

    class NoMemory:
        def stamp_outcomes(self, keys: list[str]) -> dict:
            return {}

        def save_stamp_outcomes(self, outcomes: dict) -> None:
            pass

    path = fits_factory.scaled_int_image(tmp_path / "scaled.fits")
    centre = WCS(str(path)).pixel_to_world(12, 12)  # the stamp holds the BLANK corner
    target = Target(1, "t1", centre.ra.deg, centre.dec.deg, 30, "pix")
    task = StampTask(SimpleNamespace(path=path, hdu=0), [(target, "t1")])
    members = Members()
    [outcome] = cut_task(task, CutoutCache(tmp_path / "cache", 10**8), NoMemory(), ("png",),
                         10**6, members)
    assert outcome.status == "partial" and "png" in outcome.files
    stamp = cut(path, 0, target.region)
    assert (stamp.data == -32768).any()
    png = members[outcome.files["png"][0]]
    with Image.open(io.BytesIO(png)) as shown, \
            Image.open(io.BytesIO(render_preview(stamp.physical()))) as expected:
        assert np.array_equal(np.asarray(shown), np.asarray(expected))


def test_an_image_that_cannot_be_read_is_cut_again_once_it_can(tmp_path: Path) -> None:
    """A unit whose image cannot be read reports 'error' for each target and remembers
    nothing, so the next job cuts the repaired image instead of repeating the error."""
    from types import SimpleNamespace

    from astropy.wcs import WCS

    from tests import fits_factory
    from vo_service.jobs.batch_cut import StampTask, Target, cut_task

    class Memory:
        def __init__(self) -> None:
            self.saved: dict = {}

        def stamp_outcomes(self, keys: list[str]) -> dict:
            return {key: self.saved[key] for key in keys if key in self.saved}

        def save_stamp_outcomes(self, outcomes: dict) -> None:
            self.saved.update(outcomes)

    good = fits_factory.sip_image(tmp_path / "good.fits")
    centre = WCS(str(good)).pixel_to_world(50, 50)
    target = Target(1, "t1", centre.ra.deg, centre.dec.deg, 20, "pix")
    path = tmp_path / "image.fits"
    path.write_bytes(b"SIMPLE  = not yet a FITS file")
    task = StampTask(SimpleNamespace(path=path, hdu=0), [(target, "t1")])
    memory, cache = Memory(), CutoutCache(tmp_path / "cache", 10**8)
    members = Members()
    [failed] = cut_task(task, cache, memory, ("fits",), 10**6, members)
    assert failed.status == "error" and failed.message and not failed.files and not members
    assert memory.saved == {}
    path.write_bytes(good.read_bytes())
    [outcome] = cut_task(task, cache, memory, ("fits",), 10**6, members)
    assert outcome.status == "ok" and "fits" in outcome.files
    assert members[outcome.files["fits"][0]][:6] == b"SIMPLE"


def test_target_ids_alike_as_file_names_get_their_own_stamps(batch_server, client,
                                                             demo_archive) -> None:
    """IDs that one file-name-safe form would merge (``tgt/1`` and ``tgt_1``, two IDs over
    80 characters with a common start, a repeated ID) each get their own stamp, result and
    bundle entry, cut at their own row's position."""
    from astropy.io import fits
    from astropy.wcs import WCS

    long_id = "NGC-" + "x" * 90
    ids = ["tgt/1", "tgt_1", "tgt 1", long_id + "-a", long_id + "-b", "same", "same"]
    sources = [s for s in _first_sources(demo_archive, 200) if int(s["id"]) < 200_001]
    chosen = []  # well apart, so each stamp's centre points at one row only
    for source in sources:
        ra, dec = float(source["ra"]), float(source["dec"])
        if all(abs(ra - r) * np.cos(np.radians(dec)) + abs(dec - d) > 20 / 3600
               for r, d in chosen):
            chosen.append((ra, dec))
        if len(chosen) == len(ids):
            break
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "ra", "dec"])
    writer.writerows([name, f"{ra:.7f}", f"{dec:.7f}"] for name, (ra, dec)
                     in zip(ids, chosen, strict=True))
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB",
            "SIZE": "16", "PHASE": "RUN"}
    root = wait_final(client, str(create(client, batch_server, data,
                                         out.getvalue().encode()).url))
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    results = results_of(root)
    result_ids = [r.get("id") for r in root.iterfind("uws:results/uws:result", UWS)]
    assert len(result_ids) == len(set(result_ids))
    table = assert_valid_votable(client.get(results["manifest"][0]).content
                                 ).get_first_table().to_table()
    stamps = [r for r in table if r["status"] in ("ok", "partial")]
    assert {int(r["row"]) for r in stamps} == set(range(1, len(ids) + 1))
    files = [str(r["file"]) for r in stamps]
    assert len(set(files)) == len(files) == len({str(r["access_url"]) for r in stamps})
    assert any(f.startswith("VIS/r000001_tgt_1__") for f in files), files  # still readable
    index = ArchiveIndex(batch_server.settings.index_path)
    with zipfile.ZipFile(io.BytesIO(client.get(results["bundle"][0]).content)) as bundle:
        members = bundle.namelist()
        assert len(members) == len(set(members)) == len(stamps) + 1
        for row in stamps:
            assert str(row["target_id"]) == ids[int(row["row"]) - 1]
            with fits.open(io.BytesIO(bundle.read(str(row["file"])))) as stamp:
                header = stamp[0].header
                served = client.get(str(row["access_url"])).content
                assert served == bundle.read(str(row["file"]))
            centre = WCS(header).pixel_to_world((header["NAXIS1"] - 1) / 2,
                                                (header["NAXIS2"] - 1) / 2)
            ra, dec = chosen[int(row["row"]) - 1]
            distances = [abs(centre.ra.deg - r) * np.cos(np.radians(d)) + abs(centre.dec.deg - d)
                         for r, d in chosen]
            assert int(np.argmin(distances)) == int(row["row"]) - 1, (row["row"], distances)
            assert header["ORIGFILE"] == index.get(str(row["image_id"])).path.name


def test_the_targets_of_one_image_are_chunked_by_declination(batch_server, demo_archive,
                                                            monkeypatch) -> None:
    """Each chunk of an image's targets covers a band of the image, so a tile-compressed
    image is decoded about once per job, not once per chunk; stamps keep their names."""
    from vo_service.catalogs import read_catalog
    from vo_service.jobs import batch
    from vo_service.jobs.batch_params import BatchRequest

    catalog = read_catalog(demo_catalog(demo_archive), filename="targets.csv")
    request = BatchRequest(
        upload_name="cat", ra_column=None, dec_column=None, id_column=None, size_column=None,
        size=32.0, size_unit="pix", collections=[], instruments=[], bandnames=["VIS"],
        product_types=["BGSUB"], formats=("fits",), workers=1)
    index = ArchiveIndex(batch_server.settings.index_path)
    whole = list(batch.plan_batch(catalog, request, index).tasks)  # one chunk per image
    monkeypatch.setattr(batch, "CHUNK_TARGETS", 16)
    chunked = list(batch.plan_batch(catalog, request, index).tasks)
    names = {(t.record.obs_publisher_did, target.row): name for t in whole
             for target, name in t.entries}
    assert names == {(t.record.obs_publisher_did, target.row): name for t in chunked
                     for target, name in t.entries}
    bands: dict[str, list[tuple[float, float]]] = {}
    for task in chunked:
        decs = [target.dec for target, _ in task.entries]
        bands.setdefault(task.record.obs_publisher_did, []).append((min(decs), max(decs)))
    assert max(len(ranges) for ranges in bands.values()) >= 4
    for ranges in bands.values():
        ranges.sort()
        assert all(low[1] <= high[0] for low, high in zip(ranges, ranges[1:], strict=False))


def test_a_catalog_is_read_once_for_its_jobs_creation_and_run(tmp_path: Path,
                                                               monkeypatch) -> None:
    """A job created and run at once reads its upload once (it is read at creation to
    refuse a bad catalog at once); other columns, or a file written anew, read again."""
    from vo_service.config import Limits
    from vo_service.jobs import batch_params
    from vo_service.jobs.job_files import Upload
    from vo_service.jobs.store import Parameter

    reads: list[str | None] = []
    real = batch_params.read_catalog

    def counted(path, **options):  # noqa: ANN001, ANN003, ANN202
        reads.append(options["ra_column"])
        return real(path, **options)

    monkeypatch.setattr(batch_params, "read_catalog", counted)
    path = tmp_path / "content"
    path.write_text("name,ra,dec,ra2\na,52.9,-28.1,53.0\nb,53.1,-28.2,53.2\n")
    uploads = {"cat": Upload("cat", "targets.csv", path)}

    def load(*parameters: Parameter):  # noqa: ANN202
        request = batch_params.parse_batch_request(
            [Parameter("UPLOAD", "cat,param:cat"), *parameters], Limits())
        return batch_params.load_catalog(request, uploads, Limits())

    made = load()
    assert load() is made and reads == [None]  # created, then run: read once
    assert list(load(Parameter("RA_COLUMN", "ra2")).ra) == [53.0, 53.2]
    assert reads == [None, "ra2"]
    path.write_text("name,ra,dec\nc,10.0,-5.0\n")  # another file of the same name
    assert load().ids == ["c"] and reads == [None, "ra2", None]
