"""Uploaded catalogs through the real server are read from their own bytes only, and
their cost is bounded: external references (STREAM href in BINARY, BINARY2 and FITS data,
XInclude) are refused before any parser follows them, with no file content in the answer
and no connection made; too many columns, array-valued RA/Dec/ID/size columns and
over-long CSV fields are 400 UsageErrors, never a 500."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io.votable import from_table
from astropy.table import Table
from canary import Canary
from hostile_xml import REFERENCE_VARIANTS, SERIALISATIONS, external_stream
from server import LiveServer, assert_valid_votable, query_status

from vo_service.config import Limits

TIMEOUT = httpx.Timeout(60.0)
SECRET = "SECRET-OF-ANOTHER-OWNER-4711"
REFUSAL = "refers to data outside itself"
ENDPOINTS = ("async", "api/catalog")


def post(server: LiveServer, endpoint: str, data: bytes, filename: str = "targets"
         ) -> httpx.Response:
    """Upload ``data`` as a catalog job (``async``) or to the web page's ``api/catalog``."""
    if endpoint == "async":
        return httpx.post(server.url("async"), data={"UPLOAD": "cat,param:cat"},
                          files={"cat": (filename, data)}, timeout=TIMEOUT)
    return httpx.post(server.url("api/catalog"), files={"catalog": (filename, data)},
                      timeout=TIMEOUT)


def usage_error(response: httpx.Response) -> str:
    """The text of a 400 DALI UsageError VOTable."""
    assert response.status_code == 400, (response.status_code, response.text[:500])
    value, text = query_status(assert_valid_votable(response.content))
    assert value == "ERROR" and text.startswith("UsageError:"), text
    return text


def assert_no_file_content(text: str) -> None:
    """Neither /etc/passwd nor the planted file of another owner shows in ``text``."""
    passwd = Path("/etc/passwd").read_text(errors="replace").splitlines()
    assert "root:" not in text and SECRET not in text
    assert not any(len(line) > 8 and line in text for line in passwd)


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    with Canary() as listener:
        yield listener


@pytest.fixture(scope="module")
def secret_file(live_server: LiveServer) -> Path:
    """A file under the server's state directory that no upload may read."""
    path = live_server.settings.state_dir / "jobs" / "planted-upload.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"id,ra,dec\n{SECRET},52.9,-28.1\n")
    return path


def hrefs(canary: Canary, secret_file: Path) -> dict[str, str]:
    relative = os.path.relpath(secret_file)  # the server's working directory is ours
    return {"file:///etc/passwd": "file:///etc/passwd",
            "http canary": canary.url("catalog.bin"),
            "relative file: URL": f"file:{relative}",
            "relative path": relative}


# -- external references ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("serialisation", sorted(SERIALISATIONS))
@pytest.mark.parametrize("target", ["file:///etc/passwd", "http canary", "relative file: URL",
                                    "relative path"])
def test_a_stream_href_is_refused_and_never_followed(
        live_server: LiveServer, canary: Canary, secret_file: Path, endpoint: str,
        serialisation: str, target: str) -> None:
    href = hrefs(canary, secret_file)[target]
    text = usage_error(post(live_server, endpoint, external_stream(serialisation, href)))
    assert REFUSAL in text and "STREAM" in text, text
    assert_no_file_content(text)
    assert canary.connections == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("variant", sorted(REFERENCE_VARIANTS))
def test_other_spellings_of_an_external_reference_are_refused(
        live_server: LiveServer, canary: Canary, endpoint: str, variant: str) -> None:
    for href in (canary.url(variant.replace(" ", "-")), "file:///etc/passwd"):
        text = usage_error(post(live_server, endpoint, external_stream(variant, href)))
        assert REFUSAL in text, text
        assert_no_file_content(text)
    assert canary.connections == []


def test_an_encoding_other_parsers_could_read_differently_is_refused(
        live_server: LiveServer) -> None:
    """UTF-7 can hide '<STREAM' from a byte search; such VOTables are refused."""
    data = external_stream("BINARY", "file:///etc/passwd").replace(b"UTF-8", b"UTF-7")
    text = usage_error(post(live_server, "async", data))
    assert "UTF-7" in text and "UTF-8" in text


def test_inline_binary_data_is_still_read(live_server: LiveServer) -> None:
    """A self-contained BINARY2 VOTable (base64 STREAM, no href) is a good catalog."""
    table = Table({"id": ["a", "b"], "ra": [52.9, 53.0], "dec": [-28.1, -28.0]})
    votable = from_table(table)
    votable.get_first_table().format = "binary2"
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    assert b"<STREAM" in buffer.getvalue()
    response = post(live_server, "api/catalog", buffer.getvalue(), "targets.vot")
    assert response.status_code == 200, response.text
    assert response.json()["n_rows"] == 2


# -- columns ------------------------------------------------------------------------------


def csv_with_columns(count: int) -> bytes:
    header = ["ra", "dec"] + [f"c{i}" for i in range(count - 2)]
    row = ["52.9", "-28.1"] + ["1"] * (count - 2)
    return f"{','.join(header)}\n{','.join(row)}\n".encode()


def votable_with_fields(count: int) -> bytes:
    names = ["ra", "dec"] + [f"c{i}" for i in range(count - 2)]
    fields = "".join(f'<FIELD name="{name}" datatype="double"/>' for name in names)
    cells = "".join(f"<TD>{value}</TD>" for value in [52.9, -28.1] + [1] * (count - 2))
    return (f'<?xml version="1.0"?><VOTABLE version="1.4" '
            f'xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>{fields}'
            f"<DATA><TABLEDATA><TR>{cells}</TR></TABLEDATA></DATA></TABLE></RESOURCE>"
            "</VOTABLE>").encode()


def fits_with_columns(count: int) -> bytes:
    table = Table({"ra": [52.9], "dec": [-28.1], **{f"c{i}": [1.0] for i in range(count - 2)}})
    buffer = io.BytesIO()
    table.write(buffer, format="fits")
    return buffer.getvalue()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_hundred_thousand_columns_or_ten_thousand_fields_are_refused(
        live_server: LiveServer, endpoint: str) -> None:
    limit = live_server.settings.limits.max_upload_columns
    for data in (csv_with_columns(100_000), votable_with_fields(10_000)):
        text = usage_error(post(live_server, endpoint, data))
        assert f"the limit is {limit:,}" in text, text


def test_the_column_limit_is_exact_in_every_format(live_server_factory,
                                                   demo_archive: Path) -> None:
    server = live_server_factory(demo_archive, limits=Limits(max_upload_columns=6))
    for make in (csv_with_columns, votable_with_fields, fits_with_columns):
        for endpoint in ENDPOINTS:
            text = usage_error(post(server, endpoint, make(7)))
            assert "7 columns" in text or "more than 6 columns" in text, text
            assert "the limit is 6" in text
        described = post(server, "api/catalog", make(6))
        assert described.status_code == 200, described.text
        assert len(described.json()["columns"]) == 6


def array_columns() -> dict[str, tuple[bytes, str]]:
    """Catalogs whose RA, Dec, ID or size column holds an array per row (VOTable, FITS)."""
    vector = np.array([[52.9, 52.91], [53.0, 53.01]])
    ragged = np.array([np.array([52.9, 1.0]), np.array([53.0])], dtype=object)
    base = {"name": ["a", "b"], "ra": [52.9, 53.0], "dec": [-28.1, -28.0],
            "size_arcsec": [5.0, 5.0]}
    cases = {}
    for role, column, values in (("RA", "ra", vector), ("Dec", "dec", vector),
                                 ("ID", "name", np.array([[1, 2], [3, 4]])),
                                 ("size", "size_arcsec", vector), ("RA", "ra", ragged)):
        kind = "variable-length" if values.dtype == object else "vector"
        table = Table({**base, column: values})
        fits_bytes = io.BytesIO()
        table.write(fits_bytes, format="fits")
        cases[f"FITS {kind} {role}"] = (fits_bytes.getvalue(), column)
        votable = io.BytesIO()
        from_table(table).to_xml(votable)  # arraysize="2", or "*" for the ragged one
        cases[f"VOTable {kind} {role}"] = (votable.getvalue(), column)
    return cases


ARRAY_COLUMNS = array_columns()


@pytest.mark.parametrize("case", sorted(ARRAY_COLUMNS))
def test_an_array_valued_position_id_or_size_column_is_a_usage_error(
        live_server: LiveServer, case: str) -> None:
    data, column = ARRAY_COLUMNS[case]
    text = usage_error(post(live_server, "async", data))
    assert repr(column) in text and "one value per row" in text, text
    described = post(live_server, "api/catalog", data)
    assert described.status_code in (200, 400), described.text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_csv_field_over_128_kib_is_a_usage_error(live_server: LiveServer,
                                                   endpoint: str) -> None:
    data = b"id,ra,dec\n" + b"x" * (128 * 1024 + 1) + b",52.9,-28.1\n"
    text = usage_error(post(live_server, endpoint, data, "targets.csv"))
    assert "131,072 characters" in text and "row 1" in text, text
    assert "xxxxxxxx" not in text
