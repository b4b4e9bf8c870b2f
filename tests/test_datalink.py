"""DataLink {links}, the file and preview link targets, and the SODA descriptors."""

from __future__ import annotations

import io
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import pyvo
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image
from pyvo.dal.adhoc import DatalinkResults, SodaQuery
from server import LiveServer, assert_valid_votable, query_status
from stilts_runner import datalinklint, votlint

from vo_service.archive.records import ImageRecord
from vo_service.protocols import datalink

FORNAX = (52.93, -28.09)
LINKS_MIME = "application/x-votable+xml;content=datalink"


@pytest.fixture(scope="module")
def vis_bgsub(live_server: LiveServer) -> dict[str, object]:
    """SIA columns of a VIS background-subtracted image of the central Fornax tile.

    A plain dict: pytest's repr of a pyvo record on failure crashes the interpreter.
    """
    results = pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(*FORNAX, 0.005), BANDNAME="VIS", PRODUCTTYPE="BGSUB", DPTYPE="image")
    plain = [row for row in results if "MEF" not in row["obs_publisher_did"]]
    assert len(plain) >= 1
    row = plain[0]
    values = {name: row[name] for name in ("obs_publisher_did", "s_ra", "s_dec", "em_min",
                                           "em_max")}
    values["links_url"] = row.getdataurl()
    return values


def links(server: LiveServer, *ids: str, method: str = "GET") -> httpx.Response:
    if method == "POST":
        return httpx.post(server.url("links"), data={"ID": list(ids)}, timeout=60)
    return httpx.get(server.url("links"), params=[("ID", i) for i in ids], timeout=60)


def test_links_of_an_image_found_with_sia(live_server: LiveServer, vis_bgsub: dict) -> None:
    response = httpx.get(vis_bgsub["links_url"], timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"] == LINKS_MIME
    votable = assert_valid_votable(response.content)
    resource = votable.resources[0]
    assert resource.type == "results"
    assert {i.name: i.value for i in resource.infos}["standardID"] == \
        "ivo://ivoa.net/std/DataLink#links-1.1"
    assert query_status(votable)[0] == "OK"
    table = resource.tables[0].to_table()
    assert table.colnames[0] == "ID"
    assert set(table["ID"]) == {vis_bgsub["obs_publisher_did"]}
    fields = {f.name: f for f in resource.tables[0].fields}
    assert fields["content_length"].datatype == "long" and fields["content_length"].unit == "byte"


def test_this_is_the_whole_fits_file(live_server: LiveServer, vis_bgsub: dict) -> None:
    datalinks = DatalinkResults.from_result_url(vis_bgsub["links_url"])
    this = list(datalinks.bysemantics("#this", include_narrower=False))
    assert len(this) == 1
    row = this[0]
    assert row["content_type"] == "application/fits"
    assert row["content_qualifier"] == "BGSUB"
    assert "?" not in row.access_url
    response = httpx.get(row.access_url, timeout=60)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == int(row["content_length"])
    assert len(response.content) == int(row["content_length"])
    with fits.open(io.BytesIO(response.content)) as hdul:
        assert any(h.header.get("FILTER") == "VIS" for h in hdul)
    head = httpx.head(row.access_url)
    assert head.status_code == 200 and head.content == b""
    first_block = httpx.get(row.access_url, headers={"Range": "bytes=0-2879"})
    assert first_block.status_code == 206 and first_block.content == response.content[:2880]


def test_preview_is_a_png(live_server: LiveServer, vis_bgsub: dict) -> None:
    datalinks = DatalinkResults.from_result_url(vis_bgsub["links_url"])
    preview = list(datalinks.bysemantics("#preview", include_narrower=False))
    assert len(preview) == 1 and preview[0]["content_type"] == "image/png"
    response = httpx.get(preview[0].access_url, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and min(image.size) > 10
    assert len(set(np.asarray(image).ravel().tolist())) > 10  # not a blank frame
    again = httpx.get(preview[0].access_url, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    # rendered once: the cutout cache holds it, a second request gets the same bytes
    cache = live_server.app.state.cache
    assert cache.stats().entries >= 1
    entries = cache.stats().entries
    assert httpx.get(preview[0].access_url, timeout=60).content == response.content
    assert cache.stats().entries == entries


def test_auxiliary_rows_are_the_sibling_products(live_server: LiveServer, vis_bgsub: dict) -> None:
    datalinks = DatalinkResults.from_result_url(vis_bgsub["links_url"])
    auxiliary = [row for row in datalinks.bysemantics("#auxiliary", include_narrower=False)
                 if row["local_semantics"] != "coverage"]
    # the other image products of the tile and band, its PSF model, the tile's catalog
    assert {row["content_qualifier"] for row in auxiliary} == {"RMS", "FLAG", "BGMOD",
                                                              "CATALOG-PSF", "CATALOG"}
    for row in auxiliary:
        assert row["content_type"] == "application/fits"
        assert row.access_url.startswith(live_server.url("files/"))
    flag = next(row for row in auxiliary if row["content_qualifier"] == "FLAG")
    with fits.open(io.BytesIO(httpx.get(flag.access_url, timeout=60).content)) as hdul:
        assert any(h.header.get("PRODTYPE") == "FLAG" for h in hdul)


def test_cutout_descriptor_is_dataset_specific(live_server: LiveServer, vis_bgsub: dict) -> None:
    datalinks = DatalinkResults.from_result_url(vis_bgsub["links_url"])
    cutout = list(datalinks.bysemantics("#cutout", include_narrower=False))
    assert len(cutout) == 1 and cutout[0]["service_def"]
    descriptor = datalinks.get_adhocservice_by_id(cutout[0]["service_def"])
    assert descriptor.type == "meta" and descriptor.utype == "adhoc:service"
    outside = {p.name: p.value for p in descriptor.params}
    assert outside["standardID"] == "ivo://ivoa.net/std/SODA#sync-1.0"
    assert outside["accessURL"] == live_server.url("sync")
    inputs = {p.name: p for p in descriptor.groups[0].entries}
    assert inputs["ID"].value == vis_bgsub["obs_publisher_did"]
    assert inputs["ID"].ucd == "meta.ref.url;meta.curation"
    circle = inputs["CIRCLE"]
    assert (circle.datatype, circle.arraysize, circle.xtype, circle.unit, circle.ucd) == \
        ("double", "3", "circle", "deg", "pos.outline;obs")
    ra, dec, radius = np.ravel(circle.values.max)
    assert abs(ra - vis_bgsub["s_ra"]) < 1e-6 and 0.02 < radius < 0.1
    polygon_max = np.ravel(inputs["POLYGON"].values.max)
    assert len(polygon_max) >= 6 and len(polygon_max) % 2 == 0
    band = inputs["BAND"]
    assert (band.arraysize, band.xtype, band.unit, band.ucd) == \
        ("2", "interval", "m", "em.wl;stat.interval")
    assert float(band.values.min) == pytest.approx(vis_bgsub["em_min"])
    assert float(band.values.max) == pytest.approx(vis_bgsub["em_max"])
    assert inputs["TIME"].unit == "d" and inputs["TIME"].values.min is not None
    assert "POL" not in inputs  # no polarization axis
    # a choice, not a text box (TOPCAT): the formats /sync writes
    assert [value for _, value in inputs["RESPONSEFORMAT"].values.options] == \
        ["application/fits", "image/png", "image/jpeg"]
    # pyvo builds a SODA query from it
    proc = datalinks.get_first_proc()
    assert proc["semantics"] == "#cutout"
    query = SodaQuery.from_resource(proc, proc._get_soda_resource(),
                                    circle=(vis_bgsub["s_ra"], vis_bgsub["s_dec"], 0.001))
    assert query.queryurl == live_server.url("sync")
    assert query["ID"] == vis_bgsub["obs_publisher_did"]
    assert query["CIRCLE"].split()[2] == "0.001"


def test_raw_descriptor_keeps_empty_values(live_server: LiveServer, vis_bgsub: dict) -> None:
    body = httpx.get(vis_bgsub["links_url"]).text
    assert 'name="CIRCLE" datatype="double" arraysize="3" xtype="circle" unit="deg"' in body
    assert 'value="0 0 0"' not in body  # astropy would write zeros; clients would send them


def test_many_ids_by_post_keep_rows_together(live_server: LiveServer) -> None:
    dids = [str(d) for d in pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(*FORNAX, 0.005), BANDNAME="NIR-H").to_table()["obs_publisher_did"]]
    assert len(dids) >= 4
    unknown = "ivo://vo-service.example/EUCLID-DEMO?nothing/here.fits"
    response = links(live_server, *dids, unknown, dids[0], method="POST")
    votable = assert_valid_votable(response.content)
    table = votable.resources[0].tables[0].to_table()
    order = [str(i) for i in table["ID"]]
    blocks = [did for i, did in enumerate(order) if i == 0 or order[i - 1] != did]
    assert blocks == [*dids, unknown]  # one block per ID, in request order
    error = table[table["ID"] == unknown]
    assert len(error) == 1 and error["semantics"][0] == "#this"
    assert str(error["error_message"][0]).startswith("NotFoundFault: ")


def test_many_ids_share_one_descriptor_taking_the_id_from_the_row(
        live_server: LiveServer) -> None:
    """DataLink 1.1 §4: the ID PARAM refs the links table's ID FIELD; nothing is fixed to
    one image, so whichever ``#cutout`` row a client picks, it cuts that row's image."""
    dids = [str(d) for d in pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(*FORNAX, 0.005), BANDNAME="NIR-H").to_table()["obs_publisher_did"]]
    votable = assert_valid_votable(links(live_server, *dids, method="POST").content)
    descriptors = [r for r in votable.resources if r.type == "meta"]
    assert len(descriptors) == 1
    id_param = next(p for p in descriptors[0].groups[0].entries if p.name == "ID")
    assert id_param.ref == "ID" and not id_param.value
    id_field = votable.resources[0].tables[0].fields[0]
    assert (id_field.ID, id_field.name) == ("ID", "ID")  # Aladin: FIELD@ID equals the name
    cutout_rows = votable.resources[0].tables[0].to_table()
    cutout_rows = cutout_rows[cutout_rows["semantics"] == "#cutout"]
    assert sorted(str(i) for i in cutout_rows["ID"]) == sorted(dids)
    assert set(cutout_rows["service_def"]) == {descriptors[0].ID}


@pytest.mark.parametrize("image_count", [1, 4])
def test_stilts_validators_find_nothing_to_warn_about(live_server: LiveServer, stilts: str,
                                                      tmp_path, image_count: int) -> None:  # noqa: ANN001
    """votlint and datalinklint: no "Name 'cutout' already used", and the ID of the shared
    descriptor is a ROW parameter (taken from each row), of a single-image one FIXED."""
    dids = [str(d) for d in pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(*FORNAX, 0.005), BANDNAME="NIR-H").to_table()["obs_publisher_did"]]
    document = tmp_path / "links.xml"
    document.write_bytes(links(live_server, *dids[:image_count], method="POST").content)
    assert votlint(stilts, document) == []
    messages = datalinklint(stilts, document)
    problems = [m for m in messages if m["level"] not in ("INFO", "SUMMARY")]
    assert problems == []
    counts = [str(m["text"]) for m in messages if m["code"] == "SDPR"]
    role = "FIXED" if image_count == 1 else "ROW"
    assert f"{role} parameter count 1 [ID]" in counts
    assert sum(m["code"] == "SDDO" for m in messages) == 1  # one descriptor


def test_non_ascii_unknown_id_is_echoed_as_a_uri(live_server: LiveServer) -> None:
    # DataLink fixes the ID and error_message columns as char (ASCII): the echoed ID is
    # percent-encoded as UTF-8 (IRI to URI), so the document stays valid.
    for method in ("GET", "POST"):
        response = links(live_server, "ivo://x/ÄÖ", method=method)
        assert response.status_code == 200
        table = assert_valid_votable(response.content).resources[0].tables[0].to_table()
        assert list(table["ID"]) == ["ivo://x/%C3%84%C3%96"]
        assert str(table["error_message"][0]).startswith("NotFoundFault: ")
        assert "%C3%84%C3%96" in str(table["error_message"][0])


def test_no_id_is_an_empty_table(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url("links"))
    assert response.status_code == 200
    votable = assert_valid_votable(response.content)
    assert len(votable.resources[0].tables[0].array) == 0


def test_links_of_a_cube_and_a_compressed_tile(live_server: LiveServer) -> None:
    service = pyvo.dal.SIA2Service(live_server.base_url)
    cube_links = service.search(data_type="cube")[0].getdataurl()
    datalinks = DatalinkResults.from_result_url(cube_links)
    descriptor = datalinks.get_adhocservice_by_id(
        next(datalinks.bysemantics("#cutout", include_narrower=False))["service_def"])
    band = next(p for p in descriptor.groups[0].entries if p.name == "BAND")
    assert float(band.values.min) == pytest.approx(1.2e-6, rel=0.05)
    preview_row = next(datalinks.bysemantics("#preview", include_narrower=False))
    preview = httpx.get(preview_row.access_url, timeout=60)
    assert preview.status_code == 200 and preview.content[:4] == b"\x89PNG"
    compressed = service.search(pos=(*FORNAX, 0.001), BANDNAME="VIS", PRODUCTTYPE="BGSUB",
                                collection="EUCLID-DEMO").to_table()
    for did in compressed["obs_publisher_did"]:
        url = live_server.url(f"preview?ID={quote(str(did), safe='')}")
        assert httpx.get(url, timeout=60).status_code == 200


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("files/bm90LWEtZGlk", 404, "UsageError: no image with ID"),
    ("files/%%%", 404, "UsageError: no file"),
    ("preview", 400, "UsageError: ID is required"),
    ("preview?ID=ivo://nowhere/x", 404, "UsageError: no image"),
    ("links?ID=x&RESPONSEFORMAT=text/csv", 400, "UsageError: RESPONSEFORMAT"),
    ("links?ID=x&MAXREC=-2", 400, "UsageError: MAXREC"),
])
def test_errors_are_dali_votables(live_server: LiveServer, path: str, status: int,
                                  fragment: str) -> None:
    response = httpx.get(live_server.url(path), timeout=60)
    assert response.status_code == status
    votable = assert_valid_votable(response.content)
    value, text = query_status(votable)
    assert value == "ERROR" and text.startswith(fragment)


def test_a_catalog_has_no_preview_and_says_so(live_server: LiveServer) -> None:
    from vo_service.archive.index import ArchiveIndex

    catalog = next(r for r in ArchiveIndex(live_server.settings.index_path).records()
                   if r.product_kind == "catalog")
    response = httpx.get(live_server.url("preview"), params={"ID": catalog.obs_publisher_did},
                         timeout=60)
    assert response.status_code == 400, response.text
    value, text = query_status(assert_valid_votable(response.content))
    assert value == "ERROR" and "is a catalog" in text and "#this" in text


def test_file_tokens_never_touch_the_filesystem() -> None:
    did = "ivo://a/b?../../etc/passwd"
    token = datalink.file_token(did)
    assert "/" not in token and datalink.did_from_token(token) == did


def test_covering_circle_contains_every_vertex() -> None:
    record = ImageRecord("ivo://a/b?c", "C", "c", path=__file__, hdu=0, s_ra=10.0, s_dec=-5.0,
                         s_region=((9.9, -5.1), (10.1, -5.1), (10.1, -4.9), (9.9, -4.9)))
    ra, dec, radius = datalink.covering_circle(record)
    assert (ra, dec) == (10.0, -5.0) and 0.14 < radius < 0.1415


def test_pyvo_cutout_through_the_descriptor(live_server: LiveServer, vis_bgsub: dict) -> None:
    """Discovery -> links -> SODA sync cutout, all with pyvo, as a user script would."""
    datalinks = DatalinkResults.from_result_url(vis_bgsub["links_url"])
    proc = datalinks.get_first_proc()
    ra, dec = float(vis_bgsub["s_ra"]), float(vis_bgsub["s_dec"])
    stream = proc.processed(circle=(ra, dec, 0.002))
    with fits.open(io.BytesIO(stream.read())) as hdul:
        image = next(h for h in hdul if h.data is not None)
        assert image.header["FILTER"] == "VIS"
        assert 0 < image.data.shape[0] < 100 and 0 < image.data.shape[1] < 100
        centre = WCS(image.header).pixel_to_world_values(
            (image.data.shape[1] - 1) / 2, (image.data.shape[0] - 1) / 2)
        assert abs(float(centre[0]) - ra) < 0.001 and abs(float(centre[1]) - dec) < 0.001


def test_preview_pixels_are_a_regular_subsample(tmp_path) -> None:  # noqa: ANN001
    """Scaled integers, a cube and a tile-compressed image read on the same grid as numpy's."""
    rng = np.random.default_rng(1)
    scaled = rng.integers(0, 30000, size=(2100, 1500)).astype(np.int16)
    cube = rng.normal(size=(20, 300, 2050)).astype(np.float32)
    hdul = fits.HDUList([fits.PrimaryHDU(scaled), fits.ImageHDU(cube),
                         fits.CompImageHDU(cube[0]),
                         fits.CompImageHDU(cube[1], tile_shape=(64, 64))])
    hdul[0].scale("int16", bzero=32768)
    hdul.writeto(tmp_path / "x.fits")
    with fits.open(tmp_path / "x.fits") as original:
        expected = [original[0].data[::3, ::2], original[1].data[::3, :, ::3],
                    original[2].data[:, ::3], original[3].data[:, ::3]]
    for hdu, want in enumerate(expected):
        got = datalink.downsampled_plane(tmp_path / "x.fits", hdu, max_side=1024, max_planes=8)
        assert got.shape == want.shape
        assert np.allclose(got, want)


def test_more_ids_than_allowed_overflow_without_splitting(live_server: LiveServer) -> None:
    dids = [str(d) for d in pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(*FORNAX, 0.005), BANDNAME="DES-I").to_table()["obs_publisher_did"]][:3]
    response = httpx.post(live_server.url("links"), data={"ID": dids, "MAXREC": "2"})
    votable = assert_valid_votable(response.content)
    assert query_status(votable)[0] == "OVERFLOW"
    table = votable.resources[0].tables[0].to_table()
    assert [str(i) for i in dict.fromkeys(table["ID"])] == dids[:2]


def _own_pixels(links_of_row: DatalinkResults, header: fits.Header) -> np.ndarray:
    """The pixels of the cutout's box in the file of the row's ``#this`` link."""
    this = next(links_of_row.bysemantics("#this", include_narrower=False))
    source = httpx.get(this.access_url, timeout=60).content
    with fits.open(io.BytesIO(source)) as hdul:
        data = hdul[header["ORIG_EXT"]].data
        return np.array(data[header["CUTY0"] - 1:header["CUTY1"],
                             header["CUTX0"] - 1:header["CUTX1"]])


@pytest.mark.parametrize("preserve_order", [False, True], ids=["batched", "preserve_order"])
def test_pyvo_datalink_loop_cuts_each_rows_own_image(live_server: LiveServer,
                                                     preserve_order: bool) -> None:
    """The loop of docs/soda.md: every row's ``processed()`` cutout comes from that row's
    image. The four NIR-H products of one tile share a WCS, so only ORIGFILE and the
    pixels tell a wrong image apart."""
    results = pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(*FORNAX, 0.005), BANDNAME="NIR-H", PRODUCTTYPE=["BGSUB", "RMS", "FLAG", "BGMOD"])
    dids = [str(row["obs_publisher_did"]) for row in results]
    assert len(set(dids)) >= 3
    seen: dict[str, str] = {}
    for links_of_row in results.iter_datalinks(preserve_order=preserve_order):
        did = str(links_of_row.original_row["obs_publisher_did"])
        proc = links_of_row.get_first_proc()
        assert str(proc["ID"]) == did
        stream = proc.processed(circle=(*FORNAX, 0.002))
        with fits.open(io.BytesIO(stream.read())) as hdul:
            header = hdul[0].header
            pixels = np.array(hdul[0].data)
        seen[did] = str(header["ORIGFILE"])
        assert did.endswith("/" + seen[did]), (did, seen[did])
        assert np.array_equal(pixels, _own_pixels(links_of_row, header), equal_nan=True)
    assert sorted(seen) == sorted(dids)
    assert len(set(seen.values())) == len(dids)
