"""The demo archive indexes to the rows its layout promises (bands, products, specials)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vo_service.archive.index import ArchiveIndex

BANDS = ("VIS", "NIR-Y", "NIR-J", "NIR-H", "DES-G", "DES-R", "DES-I", "DES-Z")
PRODUCTS = ("BGSUB", "RMS", "FLAG", "BGMOD")
# half-maximum ranges of speclite's Euclid and DES DR1 (decamDR1) filter curves
EM_NM = {"VIS": (541.6, 924.4), "NIR-Y": (950.4, 1216.9), "NIR-J": (1167.0, 1572.3),
         "NIR-H": (1523.9, 2027.1), "DES-G": (417.6, 547.5), "DES-R": (567.1, 715.6),
         "DES-I": (708.0, 856.2), "DES-Z": (849.4, 996.5)}


@pytest.fixture(scope="module")
def demo_index(demo_archive, tmp_path_factory) -> ArchiveIndex:
    index = ArchiveIndex(tmp_path_factory.mktemp("demo-index") / "index.sqlite")
    report = index.update([demo_archive])
    assert report.failed == []
    return index


def test_rows_per_band_and_product(demo_index):
    records = demo_index.records()
    counts = Counter((r.band, r.product_type) for r in records if r.dataproduct_type == "image")
    expected = Counter({(band, product): 4 for band in BANDS
                        for product in (*PRODUCTS, "CATALOG-PSF")})
    expected.update({("VIS", "BGSUB"): 1 + 20 + 3, ("VIS", "RMS"): 1 + 20 + 3,
                     ("VIS", "FLAG"): 1 + 3})
    # 4 tiles (with a PSF grid per band), + the MEF's three HDUs, + 20 epochs (BGSUB, RMS),
    # + 3 seam tiles (demo_seams)
    assert counts == expected
    assert {r.obs_collection for r in records} == {"EUCLID-DEMO"}
    assert {r.calib_level for r in records if r.dataproduct_type == "image"} == {3}
    facets = demo_index.facets()
    assert facets["instruments"] == ["DECAM", "NISP", "VIS"]
    counts = demo_index.facet_counts()
    # + a PSF grid per tile and band, and a source catalog (measurements) per tile
    assert counts["instruments"] == [("DECAM", 80), ("NISP", 61), ("VIS", 72)]
    assert counts["dataproduct_types"] == [("cube", 1), ("image", 212), ("measurements", 4)]
    assert facets["facilities"] == ["CTIO-4m Blanco", "Euclid"]
    for record in records:
        if record.band in EM_NM:
            lo, hi = EM_NM[record.band]
            assert (record.em_min, record.em_max) == (pytest.approx(lo * 1e-9, abs=1e-10),
                                                      pytest.approx(hi * 1e-9, abs=1e-10))
            assert record.em_res_power == pytest.approx((lo + hi) / 2 / (hi - lo), rel=1e-3)
        if record.product_kind is None:  # PSF models and catalogs carry no dates
            assert record.t_min is not None and record.t_max > record.t_min
        assert record.s_region is not None and not record.wide


def test_compressed_tile_mef_and_cube(demo_index):
    compressed = demo_index.records(tile="102018213", product_kind=None)
    assert len(compressed) == 32 and {r.hdu for r in compressed} == {1}
    assert all("[" not in r.obs_publisher_did for r in compressed)
    mef = [r for r in demo_index.records() if r.path.parent.name == "MEF"]
    assert [(r.hdu, r.product_type) for r in mef] == [(1, "BGSUB"), (2, "RMS"), (3, "FLAG")]
    assert all(r.obs_publisher_did.endswith(f"[{r.hdu}]") for r in mef)
    (cube,) = demo_index.records(dataproduct_type="cube")
    assert cube.em_xel == 40 and cube.shape[0] == 40
    assert cube.em_min == pytest.approx(1.2e-6, rel=0.02)
    assert cube.em_max == pytest.approx(1.9e-6, rel=0.02)


def test_epochs_are_separate_observations(demo_index):
    epochs = demo_index.records(tile="102020001", product_type="BGSUB")
    assert len(epochs) == 20 and len({r.t_min for r in epochs}) == 20
    (rms,) = demo_index.siblings(epochs[0])  # the RMS image of the same visit, no other
    assert rms.product_type == "RMS" and rms.t_min == epochs[0].t_min
    ra, dec = epochs[0].s_ra, epochs[0].s_dec
    hits = demo_index.lookup([ra], [dec], band="VIS", product_type="BGSUB")
    assert {r.obs_publisher_did for _, r in hits} >= {r.obs_publisher_did for r in epochs}


def test_siblings_are_the_other_products_of_a_tile_band(demo_index):
    (vis,) = demo_index.records(tile="102018211", band="VIS", product_type="BGSUB")
    assert sorted(r.product_type for r in demo_index.siblings(vis)) == [
        "BGMOD", "CATALOG-PSF", "FLAG", "RMS"]


def test_lookup_across_ra_zero_and_with_filters(demo_index):
    (tile,) = demo_index.records(tile="102159190", band="VIS", product_type="BGSUB")
    assert tile.s_ra < 0.01 or tile.s_ra > 359.99
    ra = np.array([0.0, 359.99, 0.01, 180.0])
    dec = np.full(4, tile.s_dec)
    hits = demo_index.lookup(ra, dec)
    # 8 bands x (4 image products + a PSF grid) + the tile's catalog
    assert Counter(i for i, _ in hits) == {0: 41, 1: 41, 2: 41}
    chosen = demo_index.lookup(ra, dec, band=["VIS", "NIR-H"], product_type=["BGSUB", "FLAG"])
    assert Counter(i for i, _ in chosen) == {0: 4, 1: 4, 2: 4}


def test_reindexing_the_demo_archive_reads_nothing(demo_index, demo_archive):
    report = demo_index.update([demo_archive])
    assert report.added == report.updated == report.removed == report.failed == []
    assert report.images == 181 + 32 + 4  # images, PSF grids, catalogs
