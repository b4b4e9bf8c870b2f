"""A catalog job's UWS document lists its products, not its stamps: it stays small enough
to poll however many stamps the job makes, and every stamp is reached from the manifest,
also while the job runs."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from server import assert_valid_votable
from uws_client import (
    UWS,
    job_document,
    module_client,
    module_server,
    results_of,
    stamps_of,
    wait_final,
)

from vo_service.archive.index import ArchiveIndex
from vo_service.engine.api import cut
from vo_service.shapes import CenterSize

BANDS = ["VIS", "NIR-Y", "NIR-J", "NIR-H"]
DOCUMENT_LIMIT = 200_000  # bytes of a job document a client polls

jobdoc_server = module_server("jobdoc-state")
client = module_client()


def jittered_catalog(demo_archive: Path, n_targets: int, seed: int = 3) -> bytes:
    """``n_targets`` positions near demo sources of one field (a few arcsec apart), CSV."""
    with open(demo_archive / "sources.csv", newline="") as handle:
        sources = [row for row in csv.DictReader(handle) if row["field"] == "EDF-FORNAX"]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sources), n_targets)
    jitter = rng.normal(0, 3 / 3600, (n_targets, 2))
    lines = ["id,ra,dec"]
    for number, (pick, (dra, ddec)) in enumerate(zip(picks, jitter, strict=True)):
        source = sources[pick]
        lines.append(f"t{number},{float(source['ra']) + dra:.7f},"
                     f"{float(source['dec']) + ddec:.7f}")
    return ("\n".join(lines) + "\n").encode()


def create(client, server, data: dict, catalog: bytes):
    response = client.post(server.url("async"), data=data, follow_redirects=True,
                           files={"cat": ("targets.csv", catalog, "text/csv")})
    assert response.status_code == 200, response.text
    return str(response.url)


@pytest.mark.slow
def test_a_job_of_40000_stamps_has_a_small_document_and_every_stamp_in_its_manifest(
    jobdoc_server, client, demo_archive
) -> None:
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": BANDS, "PRODUCTTYPE": "BGSUB",
            "SIZE": "8", "PHASE": "RUN"}
    url = create(client, jobdoc_server, data, jittered_catalog(demo_archive, 10_000))
    root = wait_final(client, url, attempts=60)
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"

    document = client.get(url)
    listed = client.get(f"{url}/results")
    assert len(document.content) <= DOCUMENT_LIMIT, len(document.content)
    assert len(listed.content) <= DOCUMENT_LIMIT, len(listed.content)
    assert set(results_of(root)) == {"manifest", "bundle", "coverage"}

    stamps = stamps_of(client, root)  # every stamp, from the manifest's access_url
    assert len(stamps) >= 40_000
    manifest = assert_valid_votable(client.get(results_of(root)["manifest"][0]).content)
    table = manifest.get_first_table().to_table()
    made = table[[str(s) in ("ok", "partial") for s in table["status"]]]
    assert len(made) == len(stamps)
    assert int(next(i.value for i in manifest.resources[0].infos if i.name == "stamps")) \
        == len(stamps)

    # a stamp reached from the manifest holds the pixels of that target on that image
    index = ArchiveIndex(jobdoc_server.settings.index_path)
    for row in (made[0], made[len(made) // 2], made[-1]):
        record = index.get(str(row["image_id"]))
        single = cut(record.path, record.hdu,
                     CenterSize(float(row["ra"]), float(row["dec"]), 8, 8, "pix"))
        served = client.get(str(row["access_url"]))
        assert served.status_code == 200
        assert len(served.content) == int(row["bytes"]) == int(served.headers["content-length"])
        with fits.open(io.BytesIO(served.content)) as hdus, \
                fits.open(io.BytesIO(single.fits_bytes())) as expected:
            np.testing.assert_array_equal(hdus[0].data, expected[0].data)
            assert hdus[0].header["ORIGFILE"] == record.path.name
    # the stamps are served from the bundle and cached in packs: no file per stamp
    job_dir = jobdoc_server.settings.jobs_dir / url.rsplit("/", 1)[1]
    assert sum(1 for path in job_dir.rglob("*") if path.is_file()) < 20
    cache_dir = jobdoc_server.settings.cache_dir
    assert not any(path.is_file() for path in (cache_dir / "objects").rglob("*"))
    assert 0 < sum(1 for _ in (cache_dir / "packs").iterdir()) < len(stamps) / 100
    client.delete(url)


def test_stamps_are_reachable_from_the_manifest_while_the_job_runs(
    jobdoc_server, client, demo_archive, monkeypatch
) -> None:
    from vo_service.jobs import batch

    monkeypatch.setattr(batch, "CHUNK_TARGETS", 4)  # many small units: a long run
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": "BGSUB",
            "SIZE": "48", "WORKERS": "1", "PHASE": "RUN"}
    url = create(client, jobdoc_server, data, jittered_catalog(demo_archive, 3000, seed=5))
    for _ in range(600):
        root = job_document(client, url)
        if "manifest" in results_of(root) or root.findtext("uws:phase", namespaces=UWS) \
                not in ("QUEUED", "EXECUTING"):
            break
        time.sleep(0.05)
    assert root.findtext("uws:phase", namespaces=UWS) == "EXECUTING"
    assert set(results_of(root)) == {"manifest"}  # the stamps so far, in a partial manifest
    manifest = assert_valid_votable(client.get(results_of(root)["manifest"][0]).content)
    infos = {info.name: info.value for info in manifest.resources[0].infos}
    assert "still running" in infos["incomplete"]
    stamps = stamps_of(client, root)
    assert stamps
    first = next(iter(stamps.values()))
    served = client.get(first[0])
    assert served.status_code == 200 and served.content.startswith(b"SIMPLE")
    client.post(f"{url}/phase", data={"PHASE": "ABORT"})
    for _ in range(200):  # the final manifest, marked as stopped, replaces the partial one
        results = results_of(job_document(client, url))
        if "bundle" in results:
            break
        time.sleep(0.05)
    final = assert_valid_votable(client.get(results["manifest"][0]).content)
    infos = {info.name: info.value for info in final.resources[0].infos}
    assert "stopped" in infos["incomplete"]
    assert set(stamps) <= set(stamps_of(client, job_document(client, url)))
