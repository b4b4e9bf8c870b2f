"""The archive index: which HDUs are served, metadata, incremental re-indexing, bad files."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from tests.archive_helpers import write_image, write_mef
from vo_service.archive.footprint import celestial_image
from vo_service.archive.index import ArchiveIndex, run_index
from vo_service.archive.mapping import load_mapping
from vo_service.config import Settings
from vo_service.engine import sphere
from vo_service.engine.spectral import barycentric_wavelengths
from vo_service.shapes import Circle

EUCLID_CARDS = {"TELESCOP": "Euclid", "INSTRUME": "VIS", "FILTER": "VIS", "OBS_COLL": "SYN",
                "DATE-OBS": "2024-03-01T00:00:00", "EXPTIME": 600.0}


@pytest.fixture(scope="module")
def real_index(real_data, tmp_path_factory) -> ArchiveIndex:
    index = ArchiveIndex(tmp_path_factory.mktemp("real") / "index.sqlite")
    report = index.update([real_data / "fits"])
    assert report.failed == []
    return index


def test_real_files_index_exactly_the_served_hdus(real_data, real_index):
    entries = json.loads((real_data / "catalog.json").read_text())["entries"]
    fits_entries = [e for e in entries if e["file"].startswith("fits/") and "hdu" in e]
    served = {(e["file"], e["hdu"]) for e in fits_entries if e["served"]}
    indexed = {(r.path.relative_to(real_data).as_posix(), r.hdu) for r in real_index.records()}
    assert indexed == served
    assert ("fits/images/test0.fits", 1) not in indexed  # SCI,1: no celestial WCS
    for entry in fits_entries:
        if not entry["served"]:
            continue
        record = real_index.records(path=real_data / entry["file"], hdu=entry["hdu"])[0]
        centre = sphere.radec_to_xyz(record.s_ra, record.s_dec)
        assert sphere.angle_deg(centre, sphere.radec_to_xyz(*entry["center_icrs"])) < 1e-4
        assert record.s_fov == pytest.approx(2 * entry["radius_deg"], rel=0.01)
        assert record.dataproduct_type == ("cube" if entry["kind"] == "cube" else "image")


def test_real_file_metadata(real_data, real_index):
    by_id = {r.obs_publisher_did: r for r in real_index.records()}
    first = by_id["ivo://vo-service.example/images?images/first_J105007+304037.fits"]
    assert first.dataproduct_type == "image" and first.shape == (33, 33)
    assert first.em_min == pytest.approx(0.2179, abs=1e-3)  # 1.4 GHz from the FREQ axis
    assert first.facility_name == "VLA" and first.target_name == "J105007+304037"
    cube = by_id["ivo://vo-service.example/derived?derived/l1448_13co_restfrq.fits"]
    assert cube.em_xel == 53 and cube.em_min == pytest.approx(2.7204e-3, rel=1e-4)
    # LSRK velocities -> barycentric wavelength: the same channels the engine's BAND selects
    # (the frame shift, ~6 km/s, is larger than the cube's whole 3.5 km/s range).
    header = fits.getheader(cube.path)
    channels = barycentric_wavelengths(WCS(header), header, 2, 53, (cube.s_ra, cube.s_dec))
    assert cube.em_min < channels.min() and channels.max() < cube.em_max
    assert cube.em_max - cube.em_min < 1.05 * (channels.max() - channels.min()) * 53 / 52
    plain_cube = by_id["ivo://vo-service.example/cubes?cubes/l1448_13co.fits"]
    assert plain_cube.em_min is None  # velocity axis without a rest frequency
    mef = [r for r in by_id.values() if r.path.name == "test0.fits"]
    assert sorted(r.hdu for r in mef) == [2, 3, 4]
    assert all(r.obs_publisher_did.endswith(f"[{r.hdu}]") for r in mef)
    ukidss = by_id["ivo://vo-service.example/images?images/ukidss_wfcam_M1.fits"]
    assert ukidss.hdu == 1 and ukidss.instrument_name == "WFCAM" and ukidss.band == "K"
    assert ukidss.em_min == pytest.approx(2.0291e-6) and ukidss.t_min == pytest.approx(54384.55006)
    sdss = by_id["ivo://vo-service.example/images?images/reprojected_sdss_g.fits"]
    assert sdss.t_exptime == pytest.approx(53.907456)
    assert sdss.t_max - sdss.t_min == pytest.approx(53.907456 / 86400)
    dss = by_id["ivo://vo-service.example/images?images/M6707HH.fits"]  # DATE-OBS 29/11/51
    assert dss.t_min == pytest.approx(33979.0)
    assert real_index.get(first.obs_publisher_did.upper().replace("IVO://", "ivo://")) == first
    assert {"images", "cubes", "derived"} == set(real_index.facets()["collections"])


def brute_force(real_data, real_index, ra, dec):
    """(position, DID) pairs by astropy's WCS.footprint_contains, skipping edge-ambiguous ones."""
    pairs, ambiguous = set(), set()
    coords = SkyCoord(ra, dec, unit="deg")
    for record in real_index.records():
        with fits.open(record.path) as hdul:
            image = celestial_image(hdul[record.hdu], hdul)
            near = sphere.angle_deg(sphere.radec_to_xyz(ra, dec),
                                    sphere.radec_to_xyz(record.s_ra, record.s_dec))
            candidates = np.flatnonzero(near < record.s_fov * 1.5)
            if not len(candidates):
                continue
            wcs = image.wcs
            wcs.pixel_shape = (image.nx, image.ny)
            inside = wcs.footprint_contains(coords[candidates])
            x, y = image.icrs_to_pixel(ra[candidates], dec[candidates])
            # astropy counts 0 < x < n as inside, the pixel grid is -0.5 <= x <= n - 0.5.
            edge = ((np.abs(x) < 1) | (np.abs(x - image.nx) < 1) | (np.abs(y) < 1)
                    | (np.abs(y - image.ny) < 1))
            for k, hit, on_edge in zip(candidates, inside, edge, strict=True):
                key = (int(k), record.obs_publisher_did)
                (ambiguous if on_edge else pairs if hit else set()).add(key)
    return pairs, ambiguous


def test_lookup_matches_astropy_footprint_contains(real_data, real_index):
    rng = np.random.default_rng(7)
    records = real_index.records()
    ra, dec = [], []
    for record in records:  # points in and around every image
        count = 40
        radius = record.s_fov * 0.8
        offsets = rng.uniform(-radius, radius, (count, 2))
        ra.append((record.s_ra + offsets[:, 0] / np.cos(np.radians(record.s_dec))) % 360)
        dec.append(np.clip(record.s_dec + offsets[:, 1], -90, 90))
    ra = np.concatenate(ra + [rng.uniform(0, 360, 200)])
    dec = np.concatenate(dec + [np.degrees(np.arcsin(rng.uniform(-1, 1, 200)))])
    found = {(i, r.obs_publisher_did) for i, r in real_index.lookup(ra, dec)}
    expected, ambiguous = brute_force(real_data, real_index, ra, dec)
    assert len(expected) > 300
    assert found - ambiguous == expected


def test_lookup_filters_and_order(real_index):
    hits = real_index.lookup([266.4, 266.4], [-28.93, -28.93])
    assert [i for i, _ in hits] == sorted(i for i, _ in hits)
    names = {r.path.name for _, r in hits}
    assert {"gc_2mass_k.fits", "gc_msx_e.fits", "gc_bolocam_gps.fits"} <= names
    only_k = real_index.lookup([266.4], [-28.93], band="K")
    assert [r.path.name for _, r in only_k] == ["gc_2mass_k.fits"]
    assert real_index.lookup([266.4], [-28.93], band=["nothing"]) == []
    assert real_index.lookup([180.0], [0.0]) == []


def synthetic_archive(root: Path) -> None:
    for band, ra in (("VIS", 10.0), ("NIR-Y", 10.0)):
        for product in ("BGSUB", "RMS"):
            stem = f"EUC_MER_{product}-MOSAIC-{band}_TILE7"
            write_image(root / "survey" / stem / f"{stem}.fits", ra, 5.0,
                        cards={**EUCLID_CARDS, "FILTER": band, "PRODTYPE": product})
    write_mef(root / "survey" / "mef.fits", 20.0, -5.0, ("BGSUB", "RMS", "FLAG"))
    write_image(root / "other" / "plain.fits", 30.0, 0.0, cards={"INSTRUME": "CAM"})


def test_mapping_assigns_metadata_from_names_and_headers(tmp_path):
    synthetic_archive(tmp_path / "data")
    index = ArchiveIndex(tmp_path / "index.sqlite")
    report = index.update([tmp_path / "data"], load_mapping(), authority="example.org")
    assert report.failed == [] and report.images == 8
    vis = index.records(band="VIS", product_type="RMS")[0]
    assert vis.obs_collection == "SYN" and vis.tile == "7" and vis.calib_level == 3
    assert vis.em_min == pytest.approx(541.6e-9, abs=0.1e-9)  # speclite's Euclid-VIS curve
    assert vis.em_max == pytest.approx(924.4e-9, abs=0.1e-9)
    assert vis.instrument_name == "VIS" and vis.facility_name == "Euclid"
    assert vis.t_min == pytest.approx(60370.0) and vis.t_exptime == 600.0
    assert vis.obs_publisher_did.startswith("ivo://example.org/SYN?survey/EUC_MER_RMS")
    assert {r.product_type for r in index.siblings(vis)} == {"BGSUB"}
    mef = index.records(path=tmp_path / "data" / "survey" / "mef.fits")
    assert [(r.hdu, r.product_type, r.obs_collection, r.facility_name) for r in mef] == [
        (1, "BGSUB", "MEFS", "Euclid"), (2, "RMS", "MEFS", "Euclid"), (3, "FLAG", "MEFS", "Euclid")]
    assert len(index.siblings(mef[0])) == 2
    plain = index.records(instrument="CAM")[0]
    assert plain.obs_collection == "other" and plain.product_type == "SCIENCE"
    assert plain.band is None and plain.em_min is None and plain.t_min is None


def test_mapping_file_from_settings(tmp_path):
    synthetic_archive(tmp_path / "data")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[defaults]\ncollection = "FIXED"\nproduct_type = "RAW"\n'
                       '[keywords]\ninstrument = ["INSTRUME"]\n')
    settings = Settings(data_roots=(tmp_path / "data",), state_dir=tmp_path / "state",
                        mapping_file=mapping, authority="a.b")
    report = run_index(settings)
    assert report.images == 8 and "8 images" in report.summary()
    index = ArchiveIndex(settings.index_path)
    assert index.facets()["collections"] == ["FIXED"]
    assert index.facets()["product_types"] == ["RAW"]
    # Another mapping re-reads every file, even unchanged ones.
    mapping.write_text('[defaults]\ncollection = "OTHER"\n')
    report = run_index(settings)
    assert len(report.updated) == 6 and report.unchanged == []
    assert index.facets()["collections"] == ["OTHER"]


def test_bad_files_are_reported_and_skipped(tmp_path):
    root = tmp_path / "data"
    good = write_image(root / "good.fits", 40.0, 10.0)
    shutil.copy(good, root / "truncated.fits")
    with open(root / "truncated.fits", "r+b") as handle:
        handle.truncate(good.stat().st_size - 2880)
    (root / "text.fits").write_text("this is not a FITS file\n" * 200)
    fits.PrimaryHDU(np.zeros((5, 5), np.float32)).writeto(root / "nowcs.fits")
    (root / "notes.txt").write_text("not looked at")
    (root / "loop").symlink_to(root)  # a symbolic link cycle must not hang the scan
    index = ArchiveIndex(tmp_path / "index.sqlite")
    report = index.update([root])
    failed = {path.name: reason for path, reason in report.failed}
    assert set(failed) == {"truncated.fits", "text.fits", "nowcs.fits"}
    assert "truncated" in failed["truncated.fits"]
    assert "celestial WCS" in failed["nowcs.fits"]
    assert [p.name for p in report.added] == ["good.fits"]
    assert "failed: " in report.summary()


def test_reindexing_is_incremental(tmp_path):
    root = tmp_path / "data"
    synthetic_archive(root)
    index = ArchiveIndex(tmp_path / "index.sqlite")
    first = index.update([root])
    assert len(first.added) == 6
    again = index.update([root])
    assert (len(again.unchanged), again.added, again.updated, again.removed) == (6, [], [], [])

    plain = root / "other" / "plain.fits"
    write_image(plain, 31.0, 1.0, cards={"INSTRUME": "CAM2"})  # rewritten: new content
    stamp = plain.stat().st_mtime + 10
    os.utime(plain, (stamp, stamp))
    touched = root / "survey" / "mef.fits"
    os.utime(touched, (stamp, stamp))
    stem = "EUC_MER_RMS-MOSAIC-VIS_TILE7"
    (root / "survey" / stem / f"{stem}.fits").unlink()
    write_image(root / "other" / "new.fits", 50.0, 0.0)
    report = index.update([root])
    assert sorted(p.name for p in report.updated) == ["mef.fits", "plain.fits"]
    assert [p.name for p in report.removed] == ["EUC_MER_RMS-MOSAIC-VIS_TILE7.fits"]
    assert [p.name for p in report.added] == ["new.fits"]
    assert len(report.unchanged) == 3 and report.images == 8
    assert index.records(instrument="CAM2")[0].s_ra == pytest.approx(31.0)
    assert index.lookup([31.0, 30.0], [1.0, 0.0])[0][0] == 0
    assert index.records(band="VIS", product_type="RMS") == []

    # A file that turns bad is reported and its old rows go away; a vanished root empties.
    plain.write_text("broken")
    report = index.update([root])
    assert [p.name for p, _ in report.failed] == ["plain.fits"]
    assert index.records(instrument="CAM2") == []
    # A root that disappeared (unmounted) keeps its rows; one dropped from the list does not.
    moved = tmp_path / "moved"
    root.rename(moved)
    report = index.update([root])
    assert report.removed == [] and report.images == 7
    assert "is not a directory" in report.failed[0][1]
    assert index.update([]).images == 0


@pytest.mark.slow
def test_readers_see_a_consistent_index_while_indexing(tmp_path):
    root = tmp_path / "data"
    for k in range(40):
        write_image(root / f"img{k:02d}.fits", 10.0 + k, 0.0)
    writer = ArchiveIndex(tmp_path / "index.sqlite")
    reader = ArchiveIndex(tmp_path / "index.sqlite")
    counts, errors = [], []

    def read_repeatedly() -> None:
        try:
            while thread_running.is_set():
                counts.append(len(reader.lookup(np.arange(10.0, 50.0), np.zeros(40))))
                time.sleep(0.005)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread_running = threading.Event()
    thread_running.set()
    thread = threading.Thread(target=read_repeatedly)
    thread.start()
    try:
        writer.update([root])
    finally:
        thread_running.clear()
        thread.join()
    assert errors == []
    assert counts == sorted(counts)
    assert len(reader.lookup(np.arange(10.0, 50.0), np.zeros(40))) == 40


def test_all_sky_map_is_indexed_as_wide_and_found_everywhere(real_data, tmp_path):
    index = ArchiveIndex(tmp_path / "index.sqlite")
    report = index.update([real_data / "allsky"])
    assert report.failed == [] and report.images == 1
    (record,) = index.records()
    assert record.wide and record.s_region is None and record.s_fov > 300
    rng = np.random.default_rng(3)
    ra = rng.uniform(0, 360, 300)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 300)))
    assert [i for i, _ in index.lookup(ra, dec)] == list(range(300))
    assert index.search(pos=[Circle(10.0, -80.0, 0.1)])[0] == [record]
    assert index.search(pos=[Circle(10.0, -80.0, 0.1)], collection=["elsewhere"])[0] == []


def test_facets_list_every_value_once(real_index):
    facets = real_index.facets()
    assert facets["dataproduct_types"] == ["cube", "image"]
    assert facets["pol_states"] == []
    assert "K" in facets["bands"] and "WFCAM" in facets["instruments"]


def test_an_index_from_another_version_is_rebuilt(tmp_path):
    write_image(tmp_path / "data" / "one.fits", 10.0, 0.0)
    index = ArchiveIndex(tmp_path / "index.sqlite")
    assert len(index.update([tmp_path / "data"]).added) == 1
    index.db.execute("UPDATE meta SET value = 'old' WHERE key = 'schema'")
    index.db.conn.commit()
    index.close()
    reopened = ArchiveIndex(tmp_path / "index.sqlite")
    assert reopened.count() == 0
    assert len(reopened.update([tmp_path / "data"]).added) == 1


@pytest.mark.parametrize(("cards", "t_min", "t_max", "exptime"), [
    # DATE-OBS/DATE-END in UTC
    ({"DATE-OBS": "2024-03-01T00:00:00", "DATE-END": "2024-03-01T00:10:00", "EXPTIME": 600.0},
     60370.0, 60370.0 + 600 / 86400, 600.0),
    # MJD-OBS in TT: converted to UTC (TT - UTC = 69.184 s in 2024)
    ({"MJD-OBS": 60370.0, "TIMESYS": "TT", "EXPTIME": 30.0},
     60370.0 - 69.184 / 86400, 60370.0 - 69.184 / 86400 + 30 / 86400, 30.0),
    # DATE-OBS in TAI, no end: start + exposure
    ({"DATE-OBS": "2024-03-01T00:00:37", "TIMESYS": "TAI", "XPOSURE": 10.0},
     60370.0, 60370.0 + 10 / 86400, 10.0),
    ({}, None, None, None),  # nothing known: nulls
])
def test_time_metadata_from_dates_mjd_and_timesys(tmp_path, cards, t_min, t_max, exptime):
    write_image(tmp_path / "data" / "epoch.fits", 10.0, 5.0, cards=cards)
    index = ArchiveIndex(tmp_path / "index.sqlite")
    index.update([tmp_path / "data"])
    (record,) = index.records()
    if t_min is None:
        assert (record.t_min, record.t_max, record.t_exptime) == (None, None, None)
        return
    assert record.t_min == pytest.approx(t_min, abs=1e-8)
    assert record.t_max == pytest.approx(t_max, abs=1e-8)
    assert record.t_exptime == exptime
