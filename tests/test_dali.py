"""DALI parameter parsing, value syntax and error documents (vo_service.protocols.dali)."""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from astropy.io.votable import parse as parse_votable
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from vo_service.config import Limits, Settings
from vo_service.protocols import dali
from vo_service.shapes import Circle, Polygon, Range

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "standards" / "schemas"


def votable_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "VOTable-v1.4.xsd")))


async def echo(request: Request) -> JSONResponse:
    params = await dali.read_params(request)
    if "FAIL" in params:
        raise dali.UsageError("radius must be > 0")
    if "BOOM" in params:
        raise RuntimeError("a bug")
    return JSONResponse({
        "pairs": params.pairs,
        "names": params.names(),
        "files": [[f.name, f.filename, len(f.data)] for f in params.files],
        "single": params.get_single("responseformat"),
    })


class Client:
    """Requests straight into an ASGI app (no server), as httpx's ASGI transport does."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await http.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture
def client() -> Client:
    app = Starlette(
        routes=[Route("/echo", echo, methods=["GET", "POST"])],
        exception_handlers={dali.DALIError: dali.dali_exception_handler,
                            Exception: dali.server_error_handler},
    )
    app.state.settings = replace(Settings(), limits=Limits(max_upload_bytes=1000))
    return Client(app)


def test_get_names_are_case_insensitive_and_empty_values_absent(client: Client) -> None:
    answer = client.get("/echo?pos=CIRCLE+1+2+3&BAND=&Pos=RANGE+1+2+3+4&time=1 2").json()
    assert answer["pairs"] == [["POS", "CIRCLE 1 2 3"], ["POS", "RANGE 1 2 3 4"],
                               ["TIME", "1 2"]]
    assert answer["names"] == ["POS", "TIME"]


def test_post_urlencoded_and_query_string_are_merged(client: Client) -> None:
    answer = client.post("/echo?id=a", data={"ID": ["b", "c"], "ResponseFormat": "votable"})
    assert answer.json()["pairs"][:3] == [["ID", "a"], ["ID", "b"], ["ID", "c"]]
    assert answer.json()["single"] == "votable"


def test_multipart_keeps_files_apart(client: Client) -> None:
    answer = client.post("/echo", data={"upload": "cat,param:cat"},
                         files={"cat": ("targets.csv", b"ra,dec\n1,2\n", "text/csv")}).json()
    assert answer["pairs"] == [["UPLOAD", "cat,param:cat"]]
    assert answer["files"] == [["CAT", "targets.csv", 11]]


def test_upload_over_limit_is_413_dali_error(client: Client) -> None:
    response = client.post("/echo", files={"cat": ("big.csv", b"x" * 5000, "text/csv")})
    assert response.status_code == 413
    votable = parse_votable(io.BytesIO(response.content), verify="exception")
    status = [i for i in votable.resources[0].infos if i.name == "QUERY_STATUS"][0]
    assert status.value == "ERROR" and "smaller" in status.content


def test_repeated_single_valued_parameter_is_usage_error(client: Client) -> None:
    response = client.get("/echo?RESPONSEFORMAT=votable&responseformat=csv")
    assert response.status_code == 400
    assert b"UsageError: RESPONSEFORMAT is single-valued" in response.content


def test_error_document_is_valid_votable_14(client: Client) -> None:
    response = client.get("/echo?FAIL=1")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/x-votable+xml")
    root = etree.fromstring(response.content)
    assert root.get("version") == "1.4"
    votable_schema().assertValid(root)
    votable = parse_votable(io.BytesIO(response.content), verify="exception")
    resource = votable.resources[0]
    assert resource.type == "results"
    info = resource.infos[-1]
    assert (info.name, info.value) == ("QUERY_STATUS", "ERROR")
    assert info.content == "UsageError: radius must be > 0"


def test_unexpected_exception_is_logged_500_votable(client: Client) -> None:
    response = client.get("/echo?BOOM=1")
    assert response.status_code == 500
    assert b'value="ERROR"' in response.content


def test_service_unavailable_has_retry_after() -> None:
    response = dali.error_response(dali.ServiceUnavailable("busy", retry_after=30),
                                   standard_id="ivo://ivoa.net/std/SODA#sync-1.0")
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    votable = parse_votable(io.BytesIO(response.body), verify="exception")
    assert votable.resources[0].infos[0].value == "ivo://ivoa.net/std/SODA#sync-1.0"
    assert dali.NotFound("x", label="NotFoundFault").text == "NotFoundFault: x"
    plain = dali.error_response(dali.UsageError("bad"), plain_text=True)
    assert plain.body == b"UsageError: bad\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("1 2", (1.0, 2.0)),
    ("-Inf +InF", (-math.inf, math.inf)),
    ("5e-07 inf", (5e-07, math.inf)),
    ("3.5 3.5", (3.5, 3.5)),
    ("-INFINITY 0", (-math.inf, 0.0)),
])
def test_interval(text: str, expected: tuple[float, float]) -> None:
    assert dali.parse_interval("BAND", text) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("2 1", "exceeds"), ("1", "two numbers"), ("1 2 3", "two numbers"),
    ("nan 1", "NaN"), ("a b", "not a number"), ("1_0 20", "not a number"),
])
def test_bad_interval(text: str, fragment: str) -> None:
    with pytest.raises(dali.UsageError, match=fragment):
        dali.parse_interval("BAND", text)


def test_scalar_interval_when_allowed() -> None:
    assert dali.parse_interval("FOV", "0.5", allow_scalar=True) == (0.5, 0.5)


def test_shapes() -> None:
    assert dali.parse_pos("circle 10 20 0.5") == Circle(10, 20, 0.5)
    assert dali.parse_pos("RANGE 350 10 -Inf +Inf") == Range(350, 10, -math.inf, math.inf)
    assert isinstance(dali.parse_pos("Polygon 1 1 2 1 2 2"), Polygon)
    assert dali.parse_circle("10 20 1e-3") == Circle(10, 20, 0.001)
    for bad, fragment in [("CIRCLE 10 20 -1", "radius"), ("CIRCLE 10 20", "3 numbers"),
                          ("BOX 1 2 3 4", "CIRCLE, RANGE or POLYGON"),
                          ("POLYGON 1 1 2 2", "at least 6"), ("CIRCLE 400 0 1", "RA 400"),
                          ("RANGE 1 2 3", "4 numbers"), ("CIRCLE 1 2 inf", "finite")]:
        with pytest.raises(dali.UsageError, match=fragment):
            dali.parse_pos(bad)


@pytest.mark.parametrize(("parse", "text", "message"), [
    (dali.parse_pos, "CIRCLE 400 0 1", "POS CIRCLE: RA 400.0 is outside [0, 360] degrees"),
    (dali.parse_pos, "RANGE 1 2 5 1", "POS RANGE: the lower Dec limit exceeds the upper one"),
    (dali.parse_pos, "POLYGON 0 0 1 1 1 0 0 1", "POS POLYGON: the polygon is self-intersecting"),
    (dali.parse_circle, "10 0 -1", "CIRCLE: radius must be in (0, 180] degrees, got -1.0"),
    (dali.parse_polygon, "0 0 1 1 400 0", "POLYGON: RA 400.0 is outside [0, 360] degrees"),
    (dali.parse_range, "400 10 0 1", "POS RANGE: ra_min 400.0 is outside [0, 360] degrees"),
])
def test_shape_errors_say_each_label_once(parse, text: str, message: str) -> None:  # noqa: ANN001
    with pytest.raises(dali.UsageError) as raised:
        parse(text)
    assert raised.value.text.startswith(f"UsageError: {message}")


def test_scalars() -> None:
    assert dali.parse_float("X", " 5e-07 ") == 5e-07
    assert dali.parse_int("MAXREC", "10", minimum=0) == 10
    with pytest.raises(dali.UsageError, match="at least 0"):
        dali.parse_int("MAXREC", "-1", minimum=0)
    with pytest.raises(dali.UsageError, match="integer"):
        dali.parse_int("MAXREC", "1.5")
    assert dali.parse_int("N", str(2**63 - 1)) == 2**63 - 1
    for huge in ("9" * 5000, str(2**63), "-" + "9" * 5000):  # never built, never echoed whole
        with pytest.raises(dali.UsageError, match=r"too large|at least") as refused:
            dali.parse_int("N", huge)
        assert len(str(refused.value)) < 200
    assert dali.parse_bool("B", "TRUE") is True and dali.parse_bool("B", "0") is False
    with pytest.raises(dali.UsageError, match="true or false"):
        dali.parse_bool("B", "yes")
    assert dali.parse_timestamp("T", "2020-01-02T03:04:05.5Z") == datetime(
        2020, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
    assert dali.parse_timestamp("T", "2020-01-02").year == 2020
    with pytest.raises(dali.UsageError, match="YYYY-MM-DD"):
        dali.parse_timestamp("T", "02/01/2020")


def test_responseformat() -> None:
    supported = ["application/x-votable+xml", "text/csv"]
    assert dali.parse_responseformat(None, supported).mime == "application/x-votable+xml"
    assert dali.parse_responseformat("votable", supported).content_type == \
        "application/x-votable+xml"
    echoed = dali.parse_responseformat("application/x-votable+xml;content=datalink", supported)
    assert echoed.mime == "application/x-votable+xml"
    assert echoed.content_type == "application/x-votable+xml;content=datalink"
    assert dali.parse_responseformat("text/xml", supported).content_type == "text/xml"
    with pytest.raises(dali.UsageError, match="not supported"):
        dali.parse_responseformat("application/fits", supported)


def test_votables_with_rows_of_every_length_are_written_without_memory_errors() -> None:
    """Rows whose XML grows past 256, 512 and 1024 bytes one byte at a time: astropy's C
    TABLEDATA writer writes one byte past its buffer on a row of exactly 2**n bytes. Python's
    debug allocator (-X dev) aborts the process on such a write."""
    import subprocess
    import sys

    script = """
import sys
from astropy.table import Table
from vo_service.votables import votable_bytes
ids = ["ivo://example/" + "x" * n for n in range(200, 1200)]
sys.stdout.buffer.write(votable_bytes(Table({"id": ids, "n": list(range(len(ids)))})))
"""
    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    table = parse_votable(io.BytesIO(done.stdout)).get_first_table().to_table()
    assert len(table) == 1000 and str(table["id"][-1]).endswith("x" * 1199)
