"""SIA 2 searches over the archive index: regions, intervals, strings, MAXREC, nulls."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.archive_helpers import write_image
from vo_service.archive.index import ArchiveIndex
from vo_service.shapes import Circle, Polygon, Range

INF = math.inf


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ArchiveIndex:
    root = tmp_path_factory.mktemp("search") / "data"
    common = {"OBS_COLL": "SYN", "TELESCOP": "Euclid", "DATE-OBS": "2024-03-01T00:00:00"}
    # 40x30 pixels of 36": 0.4 x 0.3 deg.
    big = {"nx": 40, "ny": 30, "scale_arcsec": 36.0}
    write_image(root / "vis.fits", 10.0, 5.0, **big,
                cards={**common, "INSTRUME": "VIS", "FILTER": "VIS", "EXPTIME": 600.0,
                       "PRODTYPE": "BGSUB"})
    write_image(root / "nir.fits", 10.0, 5.0, **big,
                cards={**common, "INSTRUME": "NISP", "FILTER": "NIR-Y", "EXPTIME": 100.0,
                       "PRODTYPE": "RMS", "DATE-OBS": "2024-06-01T00:00:00"})
    write_image(root / "ra0.fits", 0.0, -1.0, **big, cards={"INSTRUME": "CAM"})
    write_image(root / "polar.fits", 45.0, 89.95, **big, cards={"INSTRUME": "CAM"})
    write_image(root / "fine" / "small.fits", 120.0, 30.0, nx=20, ny=20, scale_arcsec=0.5,
                cards={"INSTRUME": "CAM", "OBS_COLL": "OTHER"})
    index = ArchiveIndex(root.parent / "index.sqlite")
    assert index.update([root]).failed == []
    return index


def names(result) -> list[str]:
    records, _ = result
    return sorted(Path(r.path).name for r in records)


def test_circles(index):
    assert names(index.search(pos=[Circle(10.0, 5.0, 0.01)])) == ["nir.fits", "vis.fits"]
    # Only the edge zone: the image spans RA 9.8..10.2; a circle at 10.25 of 0.06 touches it.
    assert names(index.search(pos=[Circle(10.25, 5.0, 0.06)])) == ["nir.fits", "vis.fits"]
    assert names(index.search(pos=[Circle(10.25, 5.0, 0.04)])) == []
    assert names(index.search(pos=[Circle(10.0, 5.0, 5.0)])) == ["nir.fits", "vis.fits"]
    assert len(index.search(pos=[Circle(10.0, 5.0, 179.0)])[0]) == 5
    assert names(index.search(pos=[Circle(200.0, 89.9, 0.2)])) == ["polar.fits"]
    assert names(index.search(pos=[Circle(359.9, -1.0, 0.01)])) == ["ra0.fits"]


def test_ranges(index):
    assert names(index.search(pos=[Range(359.0, 0.05, -2.0, 0.0)])) == ["ra0.fits"]
    assert names(index.search(pos=[Range(0.1, 1.0, -2.0, 0.0)])) == ["ra0.fits"]
    assert names(index.search(pos=[Range(0.3, 1.0, -2.0, 0.0)])) == []
    assert names(index.search(pos=[Range(-INF, INF, 89.0, INF)])) == ["polar.fits"]
    assert names(index.search(pos=[Range(0.0, 360.0, 4.9, 5.1)])) == ["nir.fits", "vis.fits"]
    assert names(index.search(pos=[Range(200.0, 210.0, 89.99, 90.0)])) == ["polar.fits"]
    # A long thin strip crossing the image with no corner inside it.
    assert names(index.search(pos=[Range(9.0, 11.0, 4.99, 5.01)])) == ["nir.fits", "vis.fits"]


def test_polygons_either_winding(index):
    cross = ((9.99, 3.0), (10.01, 3.0), (10.01, 7.0), (9.99, 7.0))
    assert names(index.search(pos=[Polygon(cross)])) == ["nir.fits", "vis.fits"]
    assert names(index.search(pos=[Polygon(cross[::-1])])) == ["nir.fits", "vis.fits"]
    far = ((20.0, 3.0), (21.0, 3.0), (21.0, 4.0))
    assert names(index.search(pos=[Polygon(far)])) == []
    both = [Polygon(far), Circle(120.0, 30.0, 0.001)]
    assert names(index.search(pos=both)) == ["small.fits"]


def test_intervals_and_nulls(index):
    assert names(index.search(band=[(600e-9, 600e-9)])) == ["vis.fits"]
    assert names(index.search(band=[(1e-6, INF)])) == ["nir.fits"]
    assert names(index.search(band=[(-INF, INF)])) == ["nir.fits", "vis.fits"]  # nulls never
    assert names(index.search(band=[600e-9, 1e-6])) == ["nir.fits", "vis.fits"]
    assert names(index.search(time=[(60400.0, 60500.0)])) == ["nir.fits"]
    assert names(index.search(exptime=[(500.0, INF)])) == ["vis.fits"]
    assert names(index.search(fov=[(0.0, 0.01)])) == ["small.fits"]
    assert names(index.search(spatres=[(30.0, 40.0)], instrument=["CAM"])) == [
        "polar.fits", "ra0.fits"]


def test_strings_and_ids(index):
    assert names(index.search(collection=["OTHER"])) == ["small.fits"]
    assert names(index.search(instrument=["VIS", "NISP"])) == ["nir.fits", "vis.fits"]
    # names a user types match in any case; product types and band names are exact
    assert names(index.search(instrument=["vis"], facility=["EUCLID"])) == ["vis.fits"]
    assert names(index.search(collection=["other"], target=["NOBODY", "x"])) == []
    assert names(index.search(product_type=["rms"])) == []
    assert names(index.search(facility=["Euclid"], product_type=["RMS"])) == ["nir.fits"]
    assert names(index.search(dptype=["cube"])) == []
    assert len(index.search(dptype=["image"], format=["application/fits"])[0]) == 5
    assert names(index.search(calib=[2], target=["nobody"])) == []
    did = index.records(instrument="VIS")[0].obs_publisher_did
    assert names(index.search(id=[did.upper()])) == ["vis.fits"]


def test_maxrec_overflow(index):
    records, overflow = index.search(maxrec=2)
    assert len(records) == 2 and overflow
    records, overflow = index.search(maxrec=5)
    assert len(records) == 5 and not overflow
    records, overflow = index.search(maxrec=0)
    assert records == [] and overflow


def test_range_from_360_to_0_is_all_ra_as_the_engine_cuts_it(index):
    from vo_service.engine.sky_regions import inside

    whole_circle = Range(360.0, 0.0, 4.9, 5.1)
    assert names(index.search(pos=[whole_circle])) == ["nir.fits", "vis.fits"]
    assert inside(whole_circle, [10.0, 190.0], [5.0, 5.0]).tolist() == [True, True]
