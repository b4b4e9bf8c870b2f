"""Catalog reading: VOTable, FITS and CSV/TSV; column detection; bad rows; every refusal."""

from __future__ import annotations

import io

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import from_table
from astropy.table import Table
from hostile_xml import BILLION_LAUGHS, EXTERNAL_ENTITY

from vo_service.catalogs import CatalogError, describe_catalog, read_catalog

ORION_RA, ORION_DEC = 83.82208333, -5.39111111  # 05:35:17.3 -05:23:28


def _votable_bytes(table: Table, ucds: dict[str, str] | None = None) -> bytes:
    votable = from_table(table)
    for votable_field in votable.get_first_table().fields:
        if ucds and votable_field.name in ucds:
            votable_field.ucd = ucds[votable_field.name]
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return buffer.getvalue()


def _fits_bytes(table: Table) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(buffer)
    return buffer.getvalue()


def test_csv_with_common_names_and_sexagesimal_positions() -> None:
    text = (
        "# my targets\n"
        "name,RAJ2000,DEJ2000,size\n"
        "orion-deg,83.82208333,-5.39111111,32\n"
        "orion-colon,05:35:17.3,-05:23:28,\n"
        "orion-space,05 35 17.3,-05 23 28,16\n"
        "orion-letters,5h35m17.3s,-5d23m28s,16\n"
    )
    catalog = read_catalog(text.encode(), filename="targets.csv")
    assert catalog.format == "csv"
    assert (catalog.ra_column, catalog.dec_column, catalog.id_column) == (
        "RAJ2000", "DEJ2000", "name",
    )
    assert catalog.ids == ["orion-deg", "orion-colon", "orion-space", "orion-letters"]
    np.testing.assert_allclose(catalog.ra, ORION_RA, atol=1e-6)
    np.testing.assert_allclose(catalog.dec, ORION_DEC, atol=1e-6)
    assert catalog.size_column == "size" and catalog.size_unit == "pix"
    assert not catalog.size_unit_explicit  # a bare number: the caller's default unit applies
    assert catalog.size[0] == 32 and np.isnan(catalog.size[1])  # empty: default size
    assert catalog.row_problems == {}


def test_tsv_without_id_column_numbers_the_rows() -> None:
    catalog = read_catalog(b"ra\tdec\tmag\n10.5\t-3.25\t17.1\n11\t-3\t18\n")
    assert catalog.format == "tsv"
    assert catalog.ids == ["1", "2"] and catalog.id_column is None
    assert catalog.ra.dtype == np.float64 and list(catalog.dec) == [-3.25, -3.0]
    assert [(c.name, c.datatype) for c in catalog.columns] == [
        ("ra", "float"), ("dec", "float"), ("mag", "float"),
    ]


def test_votable_columns_found_by_ucd_before_names() -> None:
    table = Table({
        "ra": [1.0, 2.0], "dec": [0.0, 0.0],  # decoys with common names
        "src": ["a", "b"], "alpha_main": [83.8, 10.0], "delta_main": [-5.39, 20.0],
    })
    data = _votable_bytes(table, {"alpha_main": "pos.eq.ra;meta.main",
                                  "delta_main": "pos.eq.dec;meta.main", "src": "meta.id;meta.main"})
    catalog = read_catalog(data)
    assert catalog.format == "votable"
    assert (catalog.ra_column, catalog.dec_column, catalog.id_column) == (
        "alpha_main", "delta_main", "src",
    )
    assert catalog.ids == ["a", "b"] and list(catalog.ra) == [83.8, 10.0]
    assert {c.name: c.ucd for c in catalog.columns}["alpha_main"] == "pos.eq.ra;meta.main"


def test_fits_table_with_units_in_radians_and_arcsec_sizes() -> None:
    table = Table({
        "OBJID": np.array([7, 8]),
        "RA": np.radians([83.8, 200.0]) * u.rad,
        "DEC": np.radians([-5.39, 45.0]) * u.rad,
        "CUTSIZE": [10.0, 0.5] * u.arcmin,
    })
    catalog = read_catalog(_fits_bytes(table), size_column="cutsize")
    assert catalog.format == "fits" and catalog.ids == ["7", "8"]
    np.testing.assert_allclose(catalog.ra, [83.8, 200.0])
    np.testing.assert_allclose(catalog.dec, [-5.39, 45.0])
    assert catalog.size_unit == "arcsec" and catalog.size_unit_explicit
    np.testing.assert_allclose(catalog.size, [600.0, 30.0])
    by_name = read_catalog(b"ra,dec,size_arcmin\n1,2,3\n")
    assert (by_name.size_unit, by_name.size_unit_explicit, by_name.size[0]) == ("arcmin", True, 3)


def test_explicit_columns_are_case_insensitive(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("target,x_ra,x_dec,ra\nM42,83.8,-5.39,999\n")
    catalog = read_catalog(path, ra_column="X_RA", dec_column="x_dec", id_column="TARGET")
    assert (catalog.ra_column, catalog.ids, list(catalog.ra)) == ("x_ra", ["M42"], [83.8])


def test_bad_rows_are_kept_and_reported() -> None:
    text = (
        "id,ra,dec\n"
        "ok,10,10\n"
        "nan,nan,10\n"
        "ra-high,360,10\n"
        "ra-negative,-1,10\n"
        "dec-high,10,90.5\n"
        "text,banana,10\n"
        "hours,25:00:00,10\n"
        "missing,10,\n"
        "short,10\n"
        "ok2,359.99,-90\n"
    )
    catalog = read_catalog(text.encode())
    assert len(catalog) == 10
    problems = catalog.row_problems
    assert sorted(problems) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "not a finite number" in problems[1]
    assert "RA 360 is outside [0, 360)" in problems[2]
    assert "RA -1 is outside" in problems[3]
    assert "Dec 90.5 is outside [-90, 90]" in problems[4]
    assert "cannot read RA 'banana'" in problems[5]
    assert "25:00:00" in problems[6]  # astropy refuses 25 hours
    assert "Dec is missing" in problems[7]
    assert "row has 2 fields, the header has 3" in problems[8]
    assert list(catalog.good_rows) == [0, 9]


def test_describe_reports_columns_rows_and_preselection() -> None:
    summary = describe_catalog(b"Name,RA_deg,Dec_deg,flux\nx,1,2,3\ny,4,5,6\n", "up.csv")
    assert summary.n_rows == 2 and summary.format == "csv"
    assert (summary.ra_column, summary.dec_column, summary.id_column) == (
        "RA_deg", "Dec_deg", "Name",
    )
    assert [c["name"] for c in summary.to_dict()["columns"]] == ["Name", "RA_deg", "Dec_deg",
                                                                "flux"]
    # describing works without positions, so the page can let the user pick columns
    assert describe_catalog(b"a,b\n1,2\n").ra_column is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\n\n# only a comment\n", "is empty"),
        (b"ra,dec\n", "has columns but no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "unrecognised catalog format"),
        (b"just some words\nmore words\n", "unrecognised format"),
        (b"<?xml version='1.0'?><VOTABLE><RESOURCE><TABLE>", "malformed VOTable"),
        (b"<html><body>not a catalog</body></html>", "malformed VOTable"),
        (b"SIMPLE  =                    T" + b" " * 50, "malformed FITS"),
        (b"ra,ra,dec\n1,2,3\n", "must name every column once"),
        (b"x,y\n1,2\n", "no RA and Dec column found"),
        (b"ra,y\n1,2\n", "no Dec column found"),
    ],
)
def test_unusable_files_are_refused_with_a_fix(data: bytes, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        read_catalog(data)


def test_fits_image_without_table_is_refused() -> None:
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(buffer)
    with pytest.raises(CatalogError, match="holds no table extension"):
        read_catalog(buffer.getvalue())


def test_a_missing_requested_column_lists_the_available_ones() -> None:
    with pytest.raises(CatalogError) as error:
        read_catalog(b"id,ra,dec\n1,2,3\n", dec_column="DEJ2000")
    assert str(error.value) == (
        "the Dec column 'DEJ2000' does not exist; available columns: id, ra, dec"
    )


def test_more_rows_than_the_limit_are_refused() -> None:
    lines = ["ra,dec"] + ["10,20"] * 10_001
    with pytest.raises(CatalogError, match="catalog has 10,001 rows; the limit is 10,000"):
        read_catalog("\n".join(lines).encode())
    assert len(read_catalog("\n".join(lines[:-1]).encode())) == 10_000
    with pytest.raises(CatalogError, match="catalog has 3 rows; the limit is 2"):
        describe_catalog(b"ra,dec\n1,1\n2,2\n3,3\n", max_rows=2)


# The same declarations in lower case must be caught too (XML is case-sensitive, but a
# sloppy check for "<!DOCTYPE" alone would let them reach a lenient parser).
LOWER_CASE_ENTITY = EXTERNAL_ENTITY.replace(b"<!DOCTYPE", b"<!doctype").replace(
    b"<!ENTITY", b"<!entity")


@pytest.mark.parametrize("data", [BILLION_LAUGHS, EXTERNAL_ENTITY, LOWER_CASE_ENTITY],
                         ids=["laughs", "external", "lower-case"])
def test_votables_with_entity_declarations_are_refused_unexpanded(data: bytes,
                                                                  monkeypatch) -> None:
    def parser_must_not_run(*args, **kwargs):
        raise AssertionError("the XML parser saw a document with entity declarations")

    monkeypatch.setattr("vo_service.catalogs.parse_votable", parser_must_not_run)
    with pytest.raises(CatalogError, match="DOCTYPE or ENTITY declaration are refused") as error:
        read_catalog(data, filename="evil.vot")
    assert "lol" not in str(error.value) and "root:" not in str(error.value)
    with pytest.raises(CatalogError, match="DOCTYPE or ENTITY"):
        describe_catalog(data)


def test_utf16_votable_is_refused_with_advice() -> None:
    data = "<?xml version='1.0' encoding='UTF-16'?><VOTABLE/>".encode("utf-16")
    with pytest.raises(CatalogError, match="save it as UTF-8"):
        read_catalog(data)


@pytest.mark.parametrize(("data", "says"), [
    ("ra,dec\n83.8,-5.4\n".encode("utf-16"), "UTF-16 encoded text; save it as UTF-8"),
    ("ra,dec\n83.8,-5.4\n".encode("utf-16-le"), "UTF-16 encoded text; save it as UTF-8"),
    (b'[{"ra": 83.8, "dec": -5.4}]', "JSON is not a catalog format"),
    (b'{\n  "targets": []\n}', "JSON is not a catalog format"),
])
def test_text_in_another_encoding_or_format_is_named(data: bytes, says: str) -> None:
    """A hostile test got "unrecognised catalog format" for UTF-16 CSV and "has columns
    but no rows" for JSON: the message now names what the file is."""
    with pytest.raises(CatalogError, match=says):
        read_catalog(data)


def test_a_damaged_fits_table_is_called_damaged_not_missing() -> None:
    """A table whose header promises more data than the file holds (astropy drops such an
    extension) is a damaged table, not 'no table extension'."""
    buffer = io.BytesIO()
    Table({"ra": [83.8, 83.9], "dec": [-5.4, -5.5]}).write(buffer, format="fits")
    good = buffer.getvalue()
    for card, damaged in ((b"NAXIS2  =                    2", b"NAXIS2  =             99999999"),
                          (b"TFORM1  = 'D       ' ", b"TFORM1  = '99999999D'")):
        assert card in good and len(card) == len(damaged)
        with pytest.raises(CatalogError) as refused:
            read_catalog(good.replace(card, damaged))
        message = str(refused.value)
        assert "no table extension" not in message and "complete" in message
        assert "table extension is damaged" in message or "malformed FITS file" in message


def test_parse_angle_reads_degrees_and_sexagesimal() -> None:
    from vo_service.catalogs import parse_angle

    assert parse_angle("05:35:17.3", is_ra=True) == pytest.approx(ORION_RA)
    assert parse_angle("83.82208333", is_ra=True) == pytest.approx(ORION_RA)
    assert parse_angle("-05 23 28", is_ra=False) == pytest.approx(ORION_DEC)
    with pytest.raises(ValueError, match="cannot read Dec 'south' as an angle; give degrees"):
        parse_angle("south", is_ra=False)


def test_votable_with_sexagesimal_text_columns() -> None:
    table = Table({"obj": ["orion"], "ra_text": ["05 35 17.3"], "dec_text": ["-05 23 28"]})
    data = _votable_bytes(table, {"ra_text": "pos.eq.ra;meta.main",
                                  "dec_text": "pos.eq.dec;meta.main"})
    catalog = read_catalog(data)
    assert catalog.ids == ["orion"] and catalog.row_problems == {}
    np.testing.assert_allclose([catalog.ra[0], catalog.dec[0]], [ORION_RA, ORION_DEC])
