"""Bad input through the real server: broken and hostile uploads, impossible parameters,
path-like IDs. Every one is answered with a DALI error VOTable and a 4xx, never a 500 or a
hang; no file outside the archive is ever served."""

from __future__ import annotations

import http.client
import io
import select
import socket
import time
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable.tree import Field, Resource, TableElement, VOTableFile
from astropy.table import Table
from hostile_xml import BILLION_LAUGHS, EXTERNAL_ENTITY
from server import LiveServer, assert_valid_votable, error_text, query_status

from vo_service.config import Limits

TIMEOUT = httpx.Timeout(60.0)


# -- helpers ------------------------------------------------------------------------------


def assert_dali_error(response: httpx.Response, status: int | Iterable[int] = range(400, 500),
                      label: str = "UsageError", *, contains: str = "") -> str:
    """``response`` is a DALI error (text/plain from /sync, else a VOTable) with a status in
    ``status``; returns its text."""
    statuses = [status] if isinstance(status, int) else list(status)
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    text = error_text(response)
    assert text.startswith(f"{label}:"), text
    assert contains.lower() in text.lower(), text
    return text


def a_record(server: LiveServer):  # -> ImageRecord
    """A 2-D BGSUB VIS image of the demo archive and a position at its centre."""
    records = server.app.state.index.records(product_type="BGSUB", band="VIS")
    return next(r for r in records if len(r.shape) == 2)


def csv_catalog(rows: int) -> bytes:
    lines = ["id,ra,dec"] + [f"t{i},{52.9 + i * 1e-5:.6f},{-28.1:.6f}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def fits_table(rows: int = 3) -> bytes:
    table = Table({"id": [f"t{i}" for i in range(rows)], "ra": np.full(rows, 52.9),
                   "dec": np.full(rows, -28.1)})
    buffer = io.BytesIO()
    table.write(buffer, format="fits")
    return buffer.getvalue()


def fits_image() -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.zeros((10, 10), dtype=np.float32)).writeto(buffer)
    return buffer.getvalue()


def votable_with_wrong_types() -> bytes:
    """A VOTable whose RA and Dec columns declare int but hold words."""
    votable = VOTableFile()
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable)
    resource.tables.append(table)
    table.fields.extend([Field(votable, name="id", datatype="char", arraysize="*"),
                         Field(votable, name="ra", datatype="char", arraysize="*"),
                         Field(votable, name="dec", datatype="char", arraysize="*")])
    table.create_arrays(2)
    table.array[0] = ("a", "north", "up")
    table.array[1] = ("b", "west", "down")
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    text = buffer.getvalue()
    for column, datatype in ((b"ra", b"int"), (b"dec", b"double")):
        text = text.replace(b'<FIELD ID="%s" arraysize="*" datatype="char"' % column,
                            b'<FIELD ID="%s" datatype="%s"' % (column, datatype))
    assert b'datatype="int"' in text and b'datatype="double"' in text
    return text


BAD_UPLOADS = {
    "truncated FITS": fits_table(50)[:2880 + 100],
    "malformed FITS": b"SIMPLE  =                    T / garbage follows" + b"\x00" * 3000,
    "FITS image, no table": fits_image(),
    "VOTable with wrong types": votable_with_wrong_types(),
    "billion laughs": BILLION_LAUGHS,
    "external entity": EXTERNAL_ENTITY,
    "empty file": b"",
    "header only": b"id,ra,dec\n",
    "binary junk": bytes(range(256)) * 20,
}


def post_catalog_job(server: LiveServer, data: bytes, filename: str = "targets",
                     **more: str) -> httpx.Response:
    return httpx.post(server.url("async"),
                      data={"UPLOAD": "cat,param:cat", "SIZE": "32", **more},
                      files={"cat": (filename, data)}, timeout=TIMEOUT, follow_redirects=False)


def post_web_catalog(server: LiveServer, data: bytes, filename: str = "targets"
                     ) -> httpx.Response:
    return httpx.post(server.url("api/catalog"), files={"catalog": (filename, data)},
                      timeout=TIMEOUT)


# -- uploads ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_a_bad_catalog_is_refused_at_job_creation(live_server: LiveServer, case: str) -> None:
    text = assert_dali_error(post_catalog_job(live_server, BAD_UPLOADS[case]), 400)
    assert "UPLOAD" in text or "catalog" in text.lower()
    assert "root:" not in text  # /etc/passwd was never read


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_a_bad_catalog_is_refused_by_the_web_page_api(live_server: LiveServer,
                                                      case: str) -> None:
    assert "root:" not in assert_dali_error(post_web_catalog(live_server, BAD_UPLOADS[case]), 400)


def test_one_row_over_the_row_limit_is_refused_and_the_limit_itself_accepted(
        live_server: LiveServer) -> None:
    limit = live_server.settings.limits.max_upload_rows
    assert_dali_error(post_catalog_job(live_server, csv_catalog(limit + 1), "t.csv"), 400,
                      contains=f"{limit:,}")
    assert_dali_error(post_web_catalog(live_server, csv_catalog(limit + 1), "t.csv"), 400,
                      contains=f"{limit:,}")
    described = post_web_catalog(live_server, csv_catalog(limit), "t.csv")
    assert described.status_code == 200 and described.json()["n_rows"] == limit


def test_a_wrong_content_type_is_a_usage_error(live_server: LiveServer) -> None:
    for path in ("async", "sync", "query", "links", "api/catalog"):
        response = httpx.post(live_server.url(path), content=b'{"ID": "x"}',
                              headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
        assert_dali_error(response, 400, contains="content type")


def test_a_malformed_multipart_body_is_a_usage_error(live_server: LiveServer) -> None:
    response = httpx.post(live_server.url("async"), content=b"--xyz\r\nnot a part",
                          headers={"Content-Type": "multipart/form-data; boundary=xyz"},
                          timeout=TIMEOUT)
    assert_dali_error(response, 400)


def _raw_request(base_url: str, head: bytes, body_chunks: Iterable[bytes]
                 ) -> tuple[bytes, int]:
    """Send ``head`` then body chunks until the server answers; return (answer, bytes sent).

    Stops sending as soon as the server has said something (or stopped reading)."""
    parts = urlsplit(base_url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # an answer is waiting: the server refused before the end
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer, sent


def test_an_upload_over_the_byte_limit_is_refused_while_streaming(live_server_factory,
                                                                  demo_archive) -> None:
    limit = 256 * 1024
    server = live_server_factory(demo_archive, limits=Limits(max_upload_bytes=limit))
    host = urlsplit(server.base_url).netloc.encode()
    huge = 4 * 1024**3  # 4 GiB declared, never sent
    chunk = b"x" * 65536

    # Declared too large: answered from the headers alone, without reading the body.
    head = (b"POST /async HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: multipart/form-data;"
            b" boundary=b\r\nContent-Length: " + str(huge).encode() + b"\r\n\r\n")
    answer, sent = _raw_request(server.base_url, head, (chunk for _ in range(2000)))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < huge // 1000

    # Chunked (no length): the server stops reading once the limit is passed.
    head = (b"POST /async HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: multipart/form-data;"
            b" boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n")
    part = b"--b\r\nContent-Disposition: form-data; name=\"cat\"; filename=\"c.csv\"\r\n\r\n"
    framed = [b"%x\r\n%s\r\n" % (len(part), part)]
    body = (framed[0] if i == 0 else b"%x\r\n%s\r\n" % (len(chunk), chunk) for i in range(4000))
    answer, sent = _raw_request(server.base_url, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 4000 * len(chunk) // 2  # refused long before the 256 MB body was sent

    # The same through an ordinary client streaming a generator of 64 MB.
    def generator() -> Iterable[bytes]:
        yield part
        for _ in range(1024):
            yield chunk
    response = httpx.post(server.url("async"), content=generator(), timeout=TIMEOUT,
                          headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_dali_error(response, 413, contains="exceeds")
    assert httpx.get(server.url("availability"), timeout=TIMEOUT).status_code == 200


RAGGED = b"id,ra,dec\nt2,52.9\nt3,52.9,-28.1,extra,more\n"


def test_ragged_csv_rows_are_reported_and_a_catalog_of_only_bad_rows_refused(
        live_server: LiveServer) -> None:
    text = assert_dali_error(post_catalog_job(live_server, RAGGED, "t.csv"), 400,
                             contains="no row of the catalog is usable")
    assert "row 1: row has 2 fields, the header has 3" in text
    # The web page describes the file (its columns) and the job names the bad rows.
    described = post_web_catalog(live_server, RAGGED, "t.csv")
    assert described.status_code == 200 and described.json()["n_rows"] == 2
    record = a_record(live_server)
    mixed = (f"id,ra,dec\ngood,{record.s_ra},{record.s_dec}\nshort,{record.s_ra}\n").encode()
    rows = run_catalog_job(live_server, mixed)
    short = [row for row in rows if row["target_id"] == "short"]
    assert short and "row has 2 fields" in str(short[0]["message"])


def run_catalog_job(server: LiveServer, catalog: bytes):  # -> astropy Table (the manifest)
    """Run a catalog job to COMPLETED; its manifest, validated; the job is deleted."""
    created = post_catalog_job(server, catalog, "t.csv", PHASE="RUN")
    assert created.status_code == 303, created.text[-300:]
    job_url = created.headers["location"]
    phase = ""
    for _ in range(30):
        phase = httpx.get(f"{job_url}/phase", timeout=TIMEOUT).text
        if phase in ("COMPLETED", "ERROR"):
            break
        httpx.get(job_url, params={"WAIT": "5"}, timeout=TIMEOUT)
    assert phase == "COMPLETED"
    manifest = httpx.get(f"{job_url}/results/manifest", timeout=TIMEOUT)
    rows = assert_valid_votable(manifest.content).get_first_table().to_table()
    httpx.delete(job_url, timeout=TIMEOUT)
    return rows


def test_control_characters_in_catalog_ids_do_not_break_the_manifest(
        live_server: LiveServer) -> None:
    record = a_record(live_server)
    rows = run_catalog_job(live_server, f"id,ra,dec\nbad\x1bid\x07,{record.s_ra},"
                                        f"{record.s_dec}\n".encode())
    assert "bad?id?" in list(rows["target_id"])


# -- parameters ---------------------------------------------------------------------------

BAD_CIRCLES = ["nan -28.1 0.01", "52.9 nan 0.01", "52.9 -28.1 nan", "inf -28.1 0.01",
               "52.9 -inf 0.01", "52.9 -28.1 inf", "360.5 -28.1 0.01", "-0.5 -28.1 0.01",
               "52.9 90.5 0.01", "52.9 -91 0.01", "52.9 -28.1 0", "52.9 -28.1 -0.01",
               "52.9 -28.1 181", "52.9 -28.1", "52.9 -28.1 0.01 4", "a b c", ""]
BAD_POLYGONS = ["52.9 -28.1 53.0 -28.1", "52.9 -28.1 53.0 -28.1 53.0",
                # a bow-tie: edges 1-2 and 3-4 cross
                "52.90 -28.10 53.00 -28.00 53.00 -28.10 52.90 -28.00",
                "52.9 -28.1 nan -28.1 53.0 -28.0", "52.9 -28.1 400 -28.1 53.0 -28.0",
                # all vertices on one great circle (a meridian): no area
                "52.9 -28.1 52.9 -28.0 52.9 -27.9"]


def _bad_spatial() -> list[tuple[str, str]]:
    cases = [("CIRCLE", c) for c in BAD_CIRCLES if c]
    cases += [("POLYGON", p) for p in BAD_POLYGONS]
    cases += [("POS", f"CIRCLE {c}") for c in BAD_CIRCLES[:6]]
    cases += [("POS", "RANGE 53 52 -28 -29"), ("POS", "RANGE nan 53 -28 -27"),
              ("POS", "BOX 52.9 -28.1 1 1"), ("POS", "RANGE 52 370 -28 -27")]
    return cases


@pytest.mark.parametrize(("name", "value"), _bad_spatial())
def test_impossible_regions_are_usage_errors_on_sync_async_and_query(
        live_server: LiveServer, name: str, value: str) -> None:
    did = a_record(live_server).obs_publisher_did
    sync = httpx.get(live_server.url("sync"), params={"ID": did, name: value}, timeout=TIMEOUT)
    assert_dali_error(sync, 400, contains=name.split()[0])
    job = httpx.post(live_server.url("async"), data={"ID": did, name: value}, timeout=TIMEOUT)
    assert_dali_error(job, 400)
    if name == "POS":
        assert_dali_error(httpx.get(live_server.url("query"), params={name: value},
                                    timeout=TIMEOUT), 400)


def test_a_bow_tie_is_refused_but_the_same_vertices_in_order_are_cut(
        live_server: LiveServer) -> None:
    record = a_record(live_server)
    ra, dec = record.s_ra, record.s_dec
    d = 0.005
    square = [ra - d, dec - d, ra + d, dec - d, ra + d, dec + d, ra - d, dec + d]
    bow_tie = [ra - d, dec - d, ra + d, dec + d, ra + d, dec - d, ra - d, dec + d]
    as_text = " ".join(f"{v:.6f}" for v in square)
    ok = httpx.get(live_server.url("sync"),
                   params={"ID": record.obs_publisher_did, "POLYGON": as_text}, timeout=TIMEOUT)
    assert ok.status_code == 200 and ok.content.startswith(b"SIMPLE")
    refused = httpx.get(live_server.url("sync"), timeout=TIMEOUT, params={
        "ID": record.obs_publisher_did, "POLYGON": " ".join(f"{v:.6f}" for v in bow_tie)})
    assert_dali_error(refused, 400, contains="self-intersecting")


def test_parameter_names_any_case_unknown_ignored_single_valued_repeated_refused(
        live_server: LiveServer) -> None:
    record = a_record(live_server)
    circle = f"{record.s_ra} {record.s_dec} 0.002"
    mixed = httpx.get(live_server.url("sync"), timeout=TIMEOUT, params={
        "iD": record.obs_publisher_did, "Circle": circle, "NOT_A_PARAMETER": "whatever"})
    assert mixed.status_code == 200 and mixed.content.startswith(b"SIMPLE")
    repeated = httpx.get(live_server.url("sync"), timeout=TIMEOUT, params=[
        ("ID", record.obs_publisher_did), ("CIRCLE", circle),
        ("RESPONSEFORMAT", "fits"), ("responseformat", "fits")])
    assert_dali_error(repeated, 400, contains="RESPONSEFORMAT")
    for path in ("query", "links"):
        response = httpx.get(live_server.url(path), timeout=TIMEOUT, params=[
            ("ID", record.obs_publisher_did), ("POS", f"CIRCLE {circle}"),
            ("MAXREC", "5"), ("maxrec", "6")])
        assert_dali_error(response, 400, contains="MAXREC")
    search = httpx.get(live_server.url("query"), timeout=TIMEOUT, params={
        "pos": f"circle {circle}", "UNKNOWN": "1"})
    assert search.status_code == 200
    assert query_status(assert_valid_votable(search.content))[0] == "OK"


# -- IDs and path segments that look like paths -------------------------------------------

PATHS = ["../../../../etc/passwd", "/etc/passwd", "..%2f..%2fetc%2fpasswd",
         "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "file:///etc/passwd",
         "ivo://vo-service.example/EUCLID-DEMO?../../../../etc/passwd",
         "ivo://vo-service.example/EUCLID-DEMO?/etc/passwd", "\x00", "C:\\Windows\\win.ini"]


@pytest.mark.parametrize("did", PATHS)
def test_path_like_ids_never_reach_the_filesystem(live_server: LiveServer, did: str) -> None:
    sync = httpx.get(live_server.url("sync"), params={"ID": did, "CIRCLE": "52.9 -28.1 0.01"},
                     timeout=TIMEOUT)
    assert_dali_error(sync, 400 if did == "\x00" else 404)  # control characters: 400
    links = httpx.get(live_server.url("links"), params={"ID": did}, timeout=TIMEOUT)
    assert links.status_code in (200, 400, 404)
    assert b"root:" not in links.content
    if links.status_code == 200:  # DataLink: one error row per unknown ID
        votable = assert_valid_votable(links.content)
        rows = votable.get_first_table().array
        assert all("NotFoundFault" in str(m) for m in rows["error_message"])
    else:
        assert_dali_error(links, (400, 404))
    job = httpx.post(live_server.url("async"), data={"ID": did, "CIRCLE": "52.9 -28.1 0.01"},
                     timeout=TIMEOUT)
    assert job.status_code in (303, 400, 404), job.text[:300]
    assert b"root:" not in job.content


def _raw_get(host: str, port: int, path: str, redirects: int = 3) -> tuple[int, bytes]:
    """GET ``path`` sent verbatim (no client-side dot-segment removal); follows redirects."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        location = response.getheader("location")
    finally:
        connection.close()
    if response.status in (301, 302, 303, 307, 308) and location and redirects:
        return _raw_get(host, port, urlsplit(location).path, redirects - 1)
    return response.status, body


@pytest.mark.parametrize("segment", ["..", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e",
                                     "%2fetc%2fpasswd", quote("/etc/passwd", safe=""),
                                     "Li4vLi4vZXRjL3Bhc3N3ZA", "L2V0Yy9wYXNzd2Q", "....//"])
def test_path_like_url_segments_are_404(live_server: LiveServer, segment: str) -> None:
    urls = [f"files/{segment}", f"async/{segment}", f"async/{segment}/results/x",
            f"async/{segment}/error", f"static/{segment}", f"api/jobs/{segment}/gallery",
            f"api/jobs/{segment}/thumb/x", f"api/jobs/{segment}/composite/1"]
    job = httpx.post(live_server.url("async"), follow_redirects=False, timeout=TIMEOUT,
                     data={"ID": a_record(live_server).obs_publisher_did,
                           "CIRCLE": "52.9 -28.1 0.01"})
    assert job.status_code == 303
    job_id = job.headers["location"].rstrip("/").rsplit("/", 1)[1]
    urls += [f"async/{job_id}/results/{segment}", f"async/{job_id}/results/..%2f..%2fjobs.sqlite",
             f"api/jobs/{job_id}/thumb/{segment}"]
    parts = urlsplit(live_server.base_url)
    for url in urls:
        status, body = _raw_get(parts.hostname, parts.port, "/" + url)
        assert status in (400, 404), (url, status)
        assert b"root:" not in body and b"SQLite format" not in body
    httpx.delete(live_server.url(f"async/{job_id}"), timeout=TIMEOUT)


@pytest.mark.parametrize(("path", "params"), [
    ("links", [("ID", "\x1b")]), ("sync", [("ID", "x\x08"), ("CIRCLE", "52.9 -28.1 0.01")]),
    ("query", [("POS", "CIRCLE 52.9 -28.1 0.1\x00")]), ("async", [("\x08", "0")])])
def test_control_characters_are_refused_not_echoed_into_xml(live_server: LiveServer, path: str,
                                                            params: list) -> None:
    record = a_record(live_server)
    for method in ("GET", "POST"):
        request = [("ID", record.obs_publisher_did), *params] if path == "links" else params
        response = (httpx.get(live_server.url(path), params=request, timeout=TIMEOUT)
                    if method == "GET" else
                    httpx.post(live_server.url(path), data=dict(request), timeout=TIMEOUT))
        assert_dali_error(response, 400, contains="control character")


def test_polygon_shapes_refused_and_accepted() -> None:
    from vo_service.shapes import MAX_POLYGON_VERTICES, Polygon, ShapeError

    angles = np.linspace(0, 2 * np.pi, MAX_POLYGON_VERTICES, endpoint=False)
    ring = tuple(zip(52.9 + 0.1 * np.cos(angles), -28.1 + 0.1 * np.sin(angles), strict=True))
    Polygon(ring)  # the most vertices allowed, either winding
    Polygon(ring[::-1])
    Polygon(((359.99, 0.0), (0.01, 0.0), (0.01, 0.01), (359.99, 0.01)))  # across RA 0
    Polygon(((0.0, 89.9), (120.0, 89.9), (240.0, 89.9)))  # around the pole
    Polygon(((10.0, 0.0), (10.0000003, 0.0), (10.0000003, 0.0000003)))  # tiny but real
    refused = {
        "self-intersecting": ((1, 1), (2, 1), (2, 2), (1.5, 0.5), (1, 2)),
        "one line": ((52.9, -28.1), (52.9, -28.0), (52.9, -27.9)),
        "at most": ring + ((1.0, 1.0),),
        "hemisphere": ((0.0, 0.0), (120.0, 0.0), (240.0, 0.0)),
    }
    for reason, vertices in refused.items():
        with pytest.raises(ShapeError, match=reason):
            Polygon(tuple((float(a), float(b)) for a, b in vertices))


def test_a_soda_job_whose_combinations_explode_is_refused(live_server: LiveServer) -> None:
    record = a_record(live_server)
    circles = [f"{record.s_ra} {record.s_dec} {0.001 + i * 1e-6:.6f}" for i in range(200)]
    bands = [f"{1e-7 * (1 + i)} {1e-7 * (2 + i)}" for i in range(100)]
    response = httpx.post(live_server.url("async"), timeout=TIMEOUT, follow_redirects=False,
                          data={"ID": record.obs_publisher_did, "CIRCLE": circles, "BAND": bands})
    assert_dali_error(response, 400, contains="20,000 cutouts")
