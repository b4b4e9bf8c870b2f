"""Stitched stamps through the real server, on the demo archive's seam tiles: SODA sync and
async with STITCH, the parameter in the service descriptor and the capabilities, and a
catalog job whose manifest says ``stitched`` with the images each stamp came from."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.wcs import FITSFixedWarning
from lxml import etree
from server import assert_valid_votable
from uws_client import UWS, XLINK_HREF, module_client, module_server, results_of, wait_final

from vo_service.engine.batch import cut_many
from vo_service.shapes import Circle

warnings.simplefilter("ignore", FITSFixedWarning)

WEST, EAST, NORTH = "102031001", "102031002", "102032001"  # demo_seams.py
ON_PATCH_SEAM, ON_TRACT_SEAM, ON_THE_CORNER = 300901, 300904, 300907


def tile_record(server, tile: str, product: str = "BGSUB"):
    (record,) = server.app.state.index.records(tile=tile, product_type=product)
    return record


def seam_source(demo_archive: Path, source_id: int) -> tuple[float, float]:
    with open(demo_archive / "sources.csv", newline="") as stream:
        row = next(r for r in csv.DictReader(stream) if int(r["id"]) == source_id)
    return float(row["ra"]), float(row["dec"])


def sync(server, **params) -> httpx.Response:
    return httpx.get(server.url("sync"), params=params, timeout=120)


def srcimg(header: fits.Header) -> list[tuple[str, str]]:
    return [(header[f"SRCIMG{n}"], header[f"SRCHOW{n}"])
            for n in range(1, header["NSRCIMG"] + 1)]


@pytest.fixture(scope="module")
def tract_mosaic(live_server, tmp_path_factory) -> Path:
    """Tract 1 as one image, made for the test from its two patches (their overlap holds
    the same pixels), with the west patch's WCS: the truth for stamps across the seam."""
    west, east = (tile_record(live_server, tile) for tile in (WEST, EAST))
    with fits.open(west.path) as west_hdus, fits.open(east.path) as east_hdus:
        west_data, east_data = west_hdus[0].data, east_hdus[0].data
        offset = int(round(west_hdus[0].header["CRPIX1"] - east_hdus[0].header["CRPIX1"]))
        mosaic = np.concatenate([west_data[:, :offset], east_data], axis=1)
        path = tmp_path_factory.mktemp("mosaic") / "tract1.fits"
        fits.PrimaryHDU(mosaic, west_hdus[0].header).writeto(path)
    return path


def test_a_stamp_across_the_patch_seam_equals_the_tract_mosaic(live_server, demo_archive,
                                                                tract_mosaic):
    ra, dec = seam_source(demo_archive, ON_PATCH_SEAM)
    west = tile_record(live_server, WEST)
    circle = f"{ra} {dec} {12 / 3600}"
    plain = sync(live_server, ID=west.obs_publisher_did, CIRCLE=circle)
    stitched = sync(live_server, ID=west.obs_publisher_did, CIRCLE=circle, STITCH="interp")
    assert plain.status_code == stitched.status_code == 200, stitched.text
    with fits.open(io.BytesIO(plain.content)) as clipped, \
            fits.open(io.BytesIO(stitched.content)) as hdus:
        header = hdus[0].header
        (truth,) = cut_many(tract_mosaic, 0, [Circle(ra, dec, 12 / 3600)])
        assert clipped[0].data.shape[1] < hdus[0].data.shape[1]  # the plain one is clipped
        np.testing.assert_array_equal(hdus[0].data, truth.hdu.data)
        assert srcimg(header) == [(west.obs_publisher_did, "copy"),
                                  (tile_record(live_server, EAST).obs_publisher_did, "copy")]
        assert set(np.unique(hdus["SRCMAP"].data)) == {1, 2}
        assert header["CRPIX1"] == truth.hdu.header["CRPIX1"]


def test_a_stamp_across_the_tract_seam_is_resampled_and_keeps_the_star(live_server,
                                                                        demo_archive):
    ra, dec = seam_source(demo_archive, ON_TRACT_SEAM)
    west, north = tile_record(live_server, WEST), tile_record(live_server, NORTH)
    answer = sync(live_server, ID=west.obs_publisher_did, CIRCLE=f"{ra} {dec} {10 / 3600}",
                  STITCH="flux")
    assert answer.status_code == 200, answer.text
    with fits.open(io.BytesIO(answer.content)) as hdus:
        header, data, source_map = hdus[0].header, hdus[0].data, hdus["SRCMAP"].data
        assert header["STITCHMD"] == "flux"
        assert srcimg(header) == [(west.obs_publisher_did, "copy"),
                                  (north.obs_publisher_did, "resample")]
        assert (source_map == -2).sum() == header["SRCPIX2"] > 0
        assert np.isfinite(data).all()  # the two tiles cover the whole stamp
        # the resampled rows continue the copied ones: the same sky level and noise
        copied, resampled = data[source_map == 1], data[source_map == -2]
        assert abs(np.median(resampled) - np.median(copied)) < 0.5 * np.std(copied)


def test_the_stamp_is_made_on_the_tile_holding_the_centre(live_server, demo_archive):
    ra, dec = seam_source(demo_archive, ON_THE_CORNER)  # in the east patch and tract 2
    west = tile_record(live_server, WEST)
    answer = sync(live_server, ID=west.obs_publisher_did, CIRCLE=f"{ra} {dec} {10 / 3600}",
                  STITCH="interp")
    assert answer.status_code == 200, answer.text
    header = fits.getheader(io.BytesIO(answer.content))
    assert header["SRCIMG1"] != west.obs_publisher_did
    assert header["ORIGFILE"] == Path(header["SRCIMG1"].split("?")[-1]).name
    assert west.obs_publisher_did in [name for name, _ in srcimg(header)]


def test_stitch_is_refused_with_a_bad_value_and_ignored_inside_one_tile(live_server):
    west = tile_record(live_server, WEST)
    bad = sync(live_server, ID=west.obs_publisher_did,
               CIRCLE=f"{west.s_ra} {west.s_dec} 0.001", STITCH="cubic")
    assert bad.status_code == 400
    assert bad.text.startswith("UsageError: STITCH must be one of none, interp, flux")
    inside = {"ID": west.obs_publisher_did, "CIRCLE": f"{west.s_ra} {west.s_dec} 0.001"}
    plain, stitched = sync(live_server, **inside), sync(live_server, **inside, STITCH="flux")
    with fits.open(io.BytesIO(plain.content)) as a, fits.open(io.BytesIO(stitched.content)) as b:
        np.testing.assert_array_equal(a[0].data, b[0].data)
        assert "STITCHED" not in b[0].header and len(b) == 1


def test_stitch_is_declared_in_the_descriptor_and_the_capabilities(live_server):
    west = tile_record(live_server, WEST)
    links = httpx.get(live_server.url("links"), params={"ID": west.obs_publisher_did})
    assert_valid_votable(links.content)
    root = etree.fromstring(links.content)
    (param,) = root.iterfind(".//{*}PARAM[@name='STITCH']")
    assert [o.get("value") for o in param.iterfind("{*}VALUES/{*}OPTION")] == [
        "none", "interp", "flux"]
    capabilities = etree.fromstring(httpx.get(live_server.url("capabilities")).content)
    for standard in ("sync", "async"):
        (capability,) = capabilities.iterfind(
            f".//capability[@standardID='ivo://ivoa.net/std/SODA#{standard}-1.0']")
        (name,) = capability.iterfind(".//param[@std='false']/name")
        assert name.text == "STITCH"


stitch_server = module_server("stitch-jobs-state")
client = module_client(follow_redirects=True)


def test_a_soda_job_with_stitch_gives_the_sync_bytes(stitch_server, client, demo_archive):
    ra, dec = seam_source(demo_archive, ON_PATCH_SEAM)
    west = tile_record(stitch_server, WEST)
    params = {"ID": west.obs_publisher_did, "CIRCLE": f"{ra} {dec} {12 / 3600}",
              "STITCH": "interp"}
    response = client.post(stitch_server.url("async"), data={**params, "PHASE": "RUN"})
    root = wait_final(client, str(response.url))
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    (result,) = root.iterfind("uws:results/uws:result", UWS)
    served = client.get(result.get(XLINK_HREF)).content
    assert served == client.get(stitch_server.url("sync"), params=params).content
    assert fits.getheader(io.BytesIO(served))["STITCHED"] is True
    refused = client.post(stitch_server.url("async"), data={**params, "STITCH": "bilinear"})
    assert refused.status_code == 400 and "STITCH must be one of" in refused.text


def test_a_catalog_job_marks_stitched_rows_with_their_images(stitch_server, client,
                                                              demo_archive):
    targets = [ON_PATCH_SEAM, ON_TRACT_SEAM, ON_THE_CORNER]
    catalog = "name,ra,dec\n" + "".join(
        f"seam{source},{ra},{dec}\n"
        for source, (ra, dec) in ((s, seam_source(demo_archive, s)) for s in targets))
    data = {"UPLOAD": "cat,param:cat", "BANDNAME": "VIS", "PRODUCTTYPE": ["BGSUB", "FLAG"],
            "SIZE": "100", "STITCH": "interp", "PHASE": "RUN"}
    response = client.post(stitch_server.url("async"), data=data,
                           files={"cat": ("seams.csv", catalog.encode(), "text/csv")})
    assert response.status_code == 200, response.text
    root = wait_final(client, str(response.url))
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    manifest = client.get(results_of(root)["manifest"][0]).content
    assert_valid_votable(manifest)
    rows = parse_single_table(io.BytesIO(manifest)).to_table()
    assert set(rows["status"]) == {"stitched"}  # every stamp crosses a tile edge
    flags = rows[rows["product_type"] == "FLAG"]
    assert len(flags) == len(rows) / 2 and len(rows) >= 2 * len(targets)
    for row in rows:
        images = str(row["stitched_from"]).split()
        assert images[0] == row["image_id"] and len(images) >= 2
        assert str(row["message"]).endswith(" ".join(images))
        with fits.open(io.BytesIO(client.get(row["access_url"]).content)) as hdus:
            assert [name for name, _ in srcimg(hdus[0].header)] == images
            assert hdus[0].data.shape == (100, 100)
            if row["product_type"] == "FLAG":
                assert hdus[0].data.dtype.kind == "i"


def test_several_regions_give_an_srcmap_per_stitched_extension(live_server, demo_archive):
    west = tile_record(live_server, WEST)
    circles = [f"{ra} {dec} {10 / 3600}" for ra, dec in (
        seam_source(demo_archive, ON_PATCH_SEAM), (west.s_ra, west.s_dec))]
    answer = httpx.get(live_server.url("sync"), timeout=120, params=[
        ("ID", west.obs_publisher_did), ("CIRCLE", circles[0]), ("CIRCLE", circles[1]),
        ("STITCH", "interp")])
    assert answer.status_code == 200, answer.text
    with fits.open(io.BytesIO(answer.content)) as hdus:
        assert [hdu.name for hdu in hdus] == ["PRIMARY", "CUTOUT1", "CUTOUT1_SRCMAP",
                                              "CUTOUT2"]
        assert hdus["CUTOUT1"].header["SRCMAP"] == "CUTOUT1_SRCMAP"
        assert hdus["CUTOUT1_SRCMAP"].data.shape == hdus["CUTOUT1"].data.shape
        assert "STITCHED" not in hdus["CUTOUT2"].header  # inside the tile: a plain cutout
