"""Catalog products: rows inside a stamp are exactly those astropy puts on its pixels
(SIP included); FITS and VOTable catalogs are indexed as measurements with coverage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.io.votable import from_table, parse_single_table, writeto
from astropy.io.votable.tree import Param
from astropy.table import Table
from astropy.wcs import WCS

import vo_service
from tests.archive_helpers import tan_header
from vo_service.archive.index import ArchiveIndex
from vo_service.archive.mapping import parse_mapping
from vo_service.engine.catalog_rows import SourceCatalog, rows_in_box, rows_in_circle
from vo_service.products.catalog_products import catalog_results

MAPPING = parse_mapping('[keywords]\nband = ["FILTER"]\nproduct_type = ["PRODTYPE"]\n'
                        'tile = ["TILEID"]\n[products]\ncatalog = ["SRC"]\n')


def _sip_header() -> fits.Header:
    header = tan_header(150.0, 2.0, nx=200, ny=160, scale_arcsec=0.4, rotation_deg=20)
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["A_ORDER"] = header["B_ORDER"] = 2
    header["A_2_0"], header["B_0_2"] = 3e-5, -2e-5
    return header


def _catalog(count: int = 4000) -> Table:
    rng = np.random.default_rng(5)
    return Table({"id": np.arange(count), "RA": 150.0 + rng.uniform(-0.02, 0.02, count),
                  "Dec": 2.0 + rng.uniform(-0.02, 0.02, count),
                  "mag": rng.uniform(18, 26, count)})


def test_rows_in_a_stamp_box_match_astropy_on_the_whole_catalog(tmp_path: Path) -> None:
    table = _catalog()
    path = tmp_path / "cat.fits"
    table.write(path)
    wcs = WCS(_sip_header())
    with SourceCatalog(path) as catalog:
        for ranges in (((20, 84), (30, 94)), ((0, 200), (0, 160)), ((150, 151), (7, 9))):
            selection = rows_in_box(catalog, wcs, ranges)
            x, y = wcs.all_world2pix(table["RA"], table["Dec"], 0)
            (x0, x1), (y0, y1) = ranges
            inside = (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)
            assert sorted(selection.rows) == sorted(np.flatnonzero(inside))
            order = np.argsort(selection.rows)
            assert np.allclose(selection.x_stamp[order], x[inside] - x0 + 1, atol=1e-8)
            assert np.allclose(selection.y_stamp[order], y[inside] - y0 + 1, atol=1e-8)
        circle = rows_in_circle(catalog, 150.005, 2.0, 0.004)
        separation = SkyCoord(table["RA"], table["Dec"], unit="deg").separation(
            SkyCoord(150.005, 2.0, unit="deg")).deg
        assert sorted(circle.rows) == sorted(np.flatnonzero(separation <= 0.004))
        assert len(circle.rows) > 10 and circle.x_stamp is None


def test_fits_and_votable_catalogs_are_indexed_and_answer(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "survey").mkdir(parents=True)
    header = _sip_header()
    header.update({"TILEID": "9", "FILTER": "i", "PRODTYPE": "SCI"})
    fits.PrimaryHDU(np.zeros((160, 200), np.float32), header).writeto(
        root / "survey" / "image.fits")
    table = _catalog()
    hdu = fits.table_to_hdu(table)
    hdu.header.update({"TILEID": "9", "PRODTYPE": "SRC"})
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(root / "survey" / "sources.fits")
    votable = from_table(table)
    for name, value in (("TILEID", "9"), ("PRODTYPE", "SRC")):
        votable.get_first_table().params.append(Param(votable, name=name, value=value,
                                                      datatype="char", arraysize="*"))
    writeto(votable, str(root / "survey" / "sources.vot"))
    index = ArchiveIndex(tmp_path / "index.sqlite")
    report = index.update([root], MAPPING)
    assert report.failed == []
    catalogs = index.records(product_kind="catalog")
    assert {r.path.name for r in catalogs} == {"sources.fits", "sources.vot"}
    (image,) = index.records(product_kind=None)
    for record in catalogs:
        assert record.dataproduct_type == "measurements" and record.tile == "9"
        assert record.s_region == image.s_region  # the tile's footprint
    rows = vo_service.catalog_rows((150.0, 2.0), 40, index=index, columns=["id", "mag"])
    assert len(rows) == 2 and rows[0].colnames == ["id", "mag", "x_stamp", "y_stamp"]
    assert sorted(rows[0]["id"]) == sorted(rows[1]["id"])  # same rows from FITS and VOTable
    # VOTable answers, and an unknown column is refused with the list of columns
    (fits_record,) = [r for r in catalogs if r.path.name == "sources.fits"]
    (result,) = catalog_results(fits_record, [vo_service.shapes.Circle(150.0, 2.0, 0.003)],
                                image, ("id",), "votable")
    assert result.status == "ok"
    answer = parse_single_table(io.BytesIO(result.content)).to_table()
    assert answer.colnames == ["id", "x_stamp", "y_stamp"] and len(answer) > 3
    (refused,) = catalog_results(fits_record, [vo_service.shapes.Circle(150.0, 2.0, 0.003)],
                                 image, ("nope",))
    assert refused.status == "error" and "no column(s) nope" in refused.message
    assert "mag" in refused.message


@pytest.mark.parametrize("hdu", [None, 1])
def test_a_catalog_file_without_positions_is_refused(tmp_path: Path, hdu) -> None:
    path = tmp_path / "plain.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table({"a": [1, 2]}))]).writeto(path)
    with pytest.raises(ValueError, match="RA/Dec"):
        SourceCatalog(path, hdu)
