"""Coverage MOCs and footprint region files through the real server, checked with mocpy and
astropy-regions as a client would read them."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import astropy.units as u
import httpx
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from lxml import etree
from mocpy import MOC
from pyvo.dal.adhoc import DatalinkResults
from regions import PointSkyRegion, PolygonSkyRegion, Regions
from server import LiveServer, error_text
from uws_client import UWS, job_document, job_results, wait_final

from vo_service.archive import coverage
from vo_service.archive.index import ArchiveIndex, run_index


def load_moc(content: bytes, tmp_path: Path, name: str = "moc.fits") -> MOC:
    """A FITS MOC as mocpy reads it from a file (what Aladin and TOPCAT get)."""
    path = tmp_path / name
    path.write_bytes(content)
    return MOC.load(str(path), format="fits")


def mocpy_union(records, order: int) -> MOC:  # noqa: ANN001
    """The reference: every footprint as its own mocpy polygon, then their union."""
    mocs = [MOC.from_polygon_skycoord(SkyCoord(np.array(r.s_region), unit="deg"),
                                      max_depth=order) for r in records]
    return mocs[0].union(*mocs[1:])


def contains(moc: MOC, ra, dec) -> np.ndarray:  # noqa: ANN001
    return moc.contains_lonlat(np.atleast_1d(ra) * u.deg, np.atleast_1d(dec) * u.deg)


@pytest.fixture(scope="module")
def index(live_server: LiveServer) -> ArchiveIndex:
    return live_server.app.state.index


def test_archive_moc_is_the_union_of_the_footprints(live_server: LiveServer, index,
                                                     tmp_path: Path) -> None:  # noqa: ANN001
    response = httpx.get(live_server.url("coverage"), timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == (
        "application/fits")
    moc = load_moc(response.content, tmp_path)
    records = index.records()
    # the demo's pixels are 0.1-0.4": cells of at most 16 median (0.3") pixels: order 16
    assert moc.max_order == 16 and coverage.cell_arcsec(16) <= 16 * 0.3
    assert moc == mocpy_union(records, 16)
    assert contains(moc, [r.s_ra for r in records], [r.s_dec for r in records]).all()
    vertices = np.concatenate([np.array(r.s_region) for r in records])
    assert contains(moc, vertices[:, 0], vertices[:, 1]).all()
    assert not contains(moc, 150.0, 60.0).any()  # far from every demo field


def test_fits_moc_is_moc_2_0_and_round_trips(live_server: LiveServer, tmp_path: Path) -> None:
    content = httpx.get(live_server.url("coverage"), timeout=60).content
    with fits.open(io.BytesIO(content)) as hdus:
        header = hdus[1].header
        assert (header["MOCVERS"], header["MOCDIM"], header["ORDERING"], header["COORDSYS"]) \
            == ("2.0", "SPACE", "NUNIQ", "C")
        assert header["MOCORD_S"] == 16 and header["TTYPE1"] == "UNIQ"
        assert header["MOCID"] == live_server.url("coverage")
    moc = load_moc(content, tmp_path)
    again = tmp_path / "again.fits"
    moc.save(str(again), format="fits")
    assert MOC.load(str(again), format="fits") == moc
    as_json = httpx.get(live_server.url("coverage"), params={"FORMAT": "json"}).json()
    assert MOC.from_json(as_json) == moc
    assert "16" in as_json  # the best order is stated even where it has no cell of its own
    ascii_text = httpx.get(live_server.url("coverage"), params={"FORMAT": "ascii"}).text
    assert MOC.from_string(ascii_text.strip(), format="ascii") == moc
    accepted = httpx.get(live_server.url("coverage"), headers={"Accept": "application/json"})
    assert accepted.headers["content-type"] == "application/json" and accepted.json() == as_json


def test_selection_by_band_and_product(live_server: LiveServer, index,  # noqa: ANN001
                                       tmp_path: Path) -> None:
    response = httpx.get(live_server.url("coverage"),
                         params=[("INSTRUMENT", "DECAM"), ("BANDNAME", "DES-G"),
                                 ("BANDNAME", "DES-R"), ("PRODUCTTYPE", "BGSUB")])
    moc = load_moc(response.content, tmp_path)
    chosen = index.records(instrument="DECAM", band=["DES-G", "DES-R"], product_type="BGSUB")
    assert chosen and moc == mocpy_union(chosen, moc.max_order)
    everything = load_moc(httpx.get(live_server.url("coverage")).content, tmp_path, "all.fits")
    assert moc.sky_fraction < everything.sky_fraction
    assert moc.intersection(everything) == moc
    nothing = load_moc(httpx.get(live_server.url("coverage"),
                                 params={"BANDNAME": "no-such-band"}).content, tmp_path, "0")
    assert nothing.empty()


def test_etag_and_bad_requests(live_server: LiveServer) -> None:
    first = httpx.get(live_server.url("coverage"))
    again = httpx.get(live_server.url("coverage"), headers={"If-None-Match": first.headers[
        "etag"]})
    assert again.status_code == 304
    wrong = httpx.get(live_server.url("coverage"), params={"FORMAT": "png"})
    assert wrong.status_code == 400
    assert "FORMAT 'png' is not offered for a MOC; use fits, json or ascii" in error_text(wrong)
    twice = httpx.get(live_server.url("coverage"), params=[("FORMAT", "json")] * 2)
    assert twice.status_code == 400 and "FORMAT is single-valued" in error_text(twice)
    bad_regions = httpx.get(live_server.url("footprints"), params={"FORMAT": "svg"})
    assert bad_regions.status_code == 400 and "use ds9 or crtf" in error_text(bad_regions)


def test_coverage_follows_the_index(demo_archive: Path, live_server_factory,  # noqa: ANN001
                                    tmp_path: Path) -> None:
    """A re-index (vo-service index while the service runs) changes the next answer."""
    root = tmp_path / "data"
    tiles = {}  # one DES-G image per tile: different footprints
    for path in sorted(demo_archive.rglob("*BGSUB*DES-G_TILE*.fits")):
        tiles.setdefault(path.name.split("_TILE")[1], path)
    decam = list(tiles.values())
    assert len(decam) >= 2
    root.mkdir()
    shutil.copy(decam[0], root / decam[0].name)
    server = live_server_factory(root)
    before = load_moc(httpx.get(server.url("coverage")).content, tmp_path, "before.fits")
    etag = httpx.get(server.url("coverage")).headers["etag"]
    shutil.copy(decam[1], root / decam[1].name)
    run_index(server.settings)
    index = server.app.state.index
    added = next(r for r in index.records() if r.path.name == decam[1].name)
    after = load_moc(httpx.get(server.url("coverage")).content, tmp_path, "after.fits")
    assert contains(after, added.s_ra, added.s_dec).all()
    assert after == mocpy_union(index.records(), after.max_order) != before
    assert httpx.get(server.url("coverage"), headers={"If-None-Match": etag}).status_code == 200
    # the built MOC is kept on disk per generation; older generations are removed
    kept = list((server.settings.state_dir / "coverage").glob("*.fits"))
    assert len(kept) == 1 and f"-g{index.generation()}" in kept[0].name


@pytest.mark.parametrize("fmt", ["ds9", "crtf"])
def test_footprints_as_region_files(live_server: LiveServer, index, fmt: str,  # noqa: ANN001
                                    tmp_path: Path) -> None:
    response = httpx.get(live_server.url("footprints"),
                         params={"FORMAT": fmt, "INSTRUMENT": "VIS"})
    assert response.status_code == 200
    shapes = Regions.parse(response.text, format=fmt)
    records = index.records(instrument="VIS")
    distinct = coverage.distinct_polygons(r.s_region for r in records)
    assert len(shapes) == len(distinct) and all(isinstance(s, PolygonSkyRegion) for s in shapes)
    centres = SkyCoord([r.s_ra for r in records], [r.s_dec for r in records], unit="deg")
    tolerance = 0.1 * u.arcsec  # CRTF is written in FK5 J2000 by astropy-regions
    for shape in shapes:  # each drawn polygon is one of the footprints, vertex for vertex
        vertices = shape.vertices.icrs
        match = [p for p in distinct if len(p) == len(vertices) and SkyCoord(
            np.array(p), unit="deg").separation(vertices).max() < tolerance]
        assert match, shape
    assert any(s.contains(centres[0], _wcs_at(centres[0])) for s in shapes)
    limited = httpx.get(live_server.url("footprints"), params={"FORMAT": fmt, "MAXREC": "2"})
    assert "# OVERFLOW: only 2 of" in limited.text
    assert len(Regions.parse(limited.text, format=fmt)) == 2


def _wcs_at(centre: SkyCoord):  # noqa: ANN202
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [centre.ra.deg, centre.dec.deg]
    wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    return wcs


def test_datalink_offers_the_coverage_of_an_image_kind(live_server: LiveServer,
                                                       index, tmp_path: Path) -> None:  # noqa: ANN001
    record = index.records(instrument="VIS", product_type="BGSUB")[0]
    links = DatalinkResults.from_result_url(
        live_server.url(f"links?ID={record.obs_publisher_did}"))
    row = next(r for r in links if r["local_semantics"] == "coverage")
    assert row["semantics"] == "#auxiliary" and row["content_type"] == "application/fits"
    moc = load_moc(httpx.get(row.access_url).content, tmp_path)
    assert contains(moc, record.s_ra, record.s_dec).all()
    kind = index.records(collection=record.obs_collection, instrument="VIS", band=record.band,
                         product_type="BGSUB")
    assert moc == mocpy_union(kind, moc.max_order)


def test_order_from_pixel_scales_and_edge_budget() -> None:
    assert coverage.coverage_order([0.3, 0.3, 0.2]) == 16  # 16 x 0.3" = 4.8" >= 3.2" cells
    assert coverage.coverage_order([1.0]) == 14  # 12.9" cells for 1" pixels
    assert coverage.coverage_order([]) == coverage.DEFAULT_ORDER
    assert coverage.coverage_order([1e-4]) == coverage.MAX_ORDER
    # 10,000 half-degree tiles: their edges would cross 22 M cells at order 16
    tiles = 10_000 * 4 * 0.5 * 3600
    order = coverage.coverage_order([0.3], tiles)
    assert order < 16 and tiles / coverage.cell_arcsec(order) <= coverage.MAX_EDGE_CELLS


def coverage_size(root: etree._Element) -> int | None:
    """The size a UWS job document gives its result ``coverage`` (None: not given)."""
    (element,) = root.iterfind("uws:results/uws:result[@id='coverage']", UWS)
    size = element.get("size")
    return None if size is None else int(size)


def test_every_catalog_job_has_a_moc_of_its_targets_and_stamps(
        live_server_factory, demo_archive: Path, tmp_path: Path) -> None:  # noqa: ANN001
    with open(demo_archive / "sources.csv", newline="") as handle:
        sources = list(csv.DictReader(handle))[:12]
    targets = [(float(s["ra"]), float(s["dec"])) for s in sources] + [(150.0, 60.0)]
    catalog = "name,ra,dec\n" + "".join(f"t{n},{ra},{dec}\n"
                                        for n, (ra, dec) in enumerate(targets))
    server = live_server_factory(demo_archive)
    with httpx.Client(timeout=120) as client:
        created = client.post(server.url("async"), data={
            "UPLOAD": "cat,param:cat", "BANDNAME": ["VIS", "NIR-H"], "PRODUCTTYPE": "BGSUB",
            "SIZE": "40", "PHASE": "RUN"}, files={"cat": ("t.csv", catalog.encode())},
            follow_redirects=True)
        root = wait_final(client, str(created.url))
        results = job_results(client, root)  # the stamps: reached from the manifest
        url, mime = results["coverage"]
        assert mime == "application/fits"
        # drawn when first asked for: no size until then, the same bytes every time after
        assert coverage_size(root) is None
        content = client.get(url).content
        assert client.get(url).content == content
        assert coverage_size(job_document(client, str(created.url))) == len(content)
        moc = load_moc(content, tmp_path)
        assert fits.getheader(io.BytesIO(content), 1)["MOCTYPE"] == "CATALOG"
        # the reference: targets as points, each FITS stamp's own WCS footprint
        footprints = []
        for key, (stamp_url, stamp_mime) in results.items():
            if stamp_mime == "application/fits" and key != "coverage":
                with fits.open(io.BytesIO(client.get(stamp_url).content)) as stamp:
                    footprints.append(WCS(stamp[0].header).calc_footprint(center=False))
        job_id = str(created.url).rsplit("/", 1)[1]
        region_files = {fmt: client.get(server.url(f"api/jobs/{job_id}/regions"),
                                        params={"FORMAT": fmt}) for fmt in ("ds9", "crtf")}
    assert len(footprints) >= 12
    order = moc.max_order
    reference = MOC.from_lonlat(lon=np.array(targets)[:, 0] * u.deg,
                                lat=np.array(targets)[:, 1] * u.deg, max_norder=order)
    for corners in footprints:
        reference = reference.union(MOC.from_polygon_skycoord(
            SkyCoord(corners, unit="deg"), max_depth=order))
    assert moc == reference
    assert contains(moc, *np.array(targets).T).all()  # the target outside every image too
    # the same targets and stamp footprints as region files for DS9 and CASA
    for fmt, response in region_files.items():
        assert response.status_code == 200
        shapes = Regions.parse(response.text, format=fmt)
        points = [s for s in shapes if isinstance(s, PointSkyRegion)]
        polygons = [s for s in shapes if isinstance(s, PolygonSkyRegion)]
        # one polygon per stamp footprint (epochs of one field share theirs)
        distinct = {tuple(np.round(f, 6).ravel()) for f in footprints}
        assert len(points) == len(targets) and len(polygons) == len(distinct)
        drawn = SkyCoord([p.center.icrs for p in points])
        sent = SkyCoord(np.array(targets), unit="deg")
        assert drawn.separation(sent).max() < 0.1 * u.arcsec
        assert {p.meta["label" if fmt == "crtf" else "text"] for p in points} == {
            f"t{n}" for n in range(len(targets))}


def test_many_polygons_are_built_in_calls_of_a_bounded_size_and_give_the_same_moc(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Polygons go to mocpy in calls of POLYGONS_PER_CALL (one call's time grows with the
    square of its polygons); the union is the MOC of every polygon, each vertex count."""
    rng = np.random.default_rng(4)
    polygons = []
    for k in range(11):
        ra, dec = 52.9 + rng.uniform(0, 0.3), -28.1 + rng.uniform(0, 0.3)
        side = 0.002 * (1 + k % 3)
        square = [(ra, dec), (ra + side, dec), (ra + side, dec + side), (ra, dec + side)]
        polygons.append(square if k % 4 else square[:3])  # triangles among the squares
    reference = MOC.new_empty(16)
    for polygon in polygons:
        reference = reference.union(MOC.from_polygon_skycoord(
            SkyCoord(polygon, unit="deg"), max_depth=16))
    calls = []
    building = MOC.from_polygons

    def counted(lonlat, **options):  # noqa: ANN001, ANN003 - mocpy's signature
        calls.append(len(lonlat) // 2)
        return building(lonlat, **options)

    monkeypatch.setattr(coverage, "POLYGONS_PER_CALL", 3)
    monkeypatch.setattr(coverage.MOC, "from_polygons", counted)
    assert coverage.polygons_moc(polygons, 16) == reference
    assert max(calls) <= 3 and sum(calls) == len(polygons)
