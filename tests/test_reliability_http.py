"""Requests that go wrong at the HTTP level, through the real server: half-sent heads and
bodies are closed after the configured timeouts (with a 408 DALI error), refused CORS
preflights answer DALI errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from server import LiveServer
from test_reliability_input import TIMEOUT, assert_dali_error

from vo_service.config import Limits

# The server is given short timeouts; a connection it has not closed this long after is a
# hang (not a timing threshold: the assertion is that the server closes at all).
HANG_SECONDS = 60


@pytest.fixture(scope="module")
def impatient(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[LiveServer]:
    """A server that waits 1 s for a request head and 2 s for each piece of a body."""
    from server import serve_archive

    with serve_archive(demo_archive, tmp_path_factory.mktemp("impatient-state"),
                       limits=Limits(header_timeout_seconds=1, body_timeout_seconds=2)
                       ) as server:
        yield server


def _connect(server: LiveServer) -> socket.socket:
    parts = urlsplit(server.base_url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=HANG_SECONDS)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails on a hang."""
    answer = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return answer
        except TimeoutError:
            pytest.fail(f"the server kept a stalled connection open; got {answer[:200]!r}")
        if not data:
            return answer
        answer += data


def _votable_error(answer: bytes, status: int) -> str:
    """The status line is ``status`` and the body a DALI error; returns its text."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith(f"HTTP/1.1 {status} "), answer[:300]
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
    # A stalled request is answered before its path is read, so always as a VOTable.
    response = httpx.Response(status, headers=headers, content=body,
                              request=httpx.Request("GET", "http://stalled.invalid/"))
    assert response.headers["connection"] == "close"
    assert int(response.headers["content-length"]) == len(body)
    return assert_dali_error(response, status)


HALF_HEADS = [b"GET /capabilities HTTP/1.1\r\nHost: x\r\n",
              b"POST /async HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; bou",
              b"GET /sync?ID=ivo://x&CIRCLE=1%202%200.1 HTTP/1",
              b"G"]


def test_half_sent_request_heads_are_closed_with_408(impatient: LiveServer) -> None:
    sockets = []
    for _ in range(10):  # many at once: none is left open
        for head in HALF_HEADS:
            sock = _connect(impatient)
            sock.sendall(head)
            sockets.append(sock)
    silent = _connect(impatient)  # a connection that never sends a byte
    for sock in sockets:
        with sock:
            text = _votable_error(_read_until_closed(sock), 408)
            assert "request line and headers" in text
    with silent:
        assert _read_until_closed(silent) == b""
    assert httpx.get(impatient.url("availability"), timeout=TIMEOUT).status_code == 200


def test_a_head_sent_in_slow_pieces_is_closed_too(impatient: LiveServer) -> None:
    """Slowloris: a byte now and then never completes the head; the timer does not restart."""
    with _connect(impatient) as sock:
        sock.sendall(b"GET /availability HTTP/1.1\r\n")
        answer = b""
        for _ in range(HANG_SECONDS * 5):
            try:
                sock.sendall(b"X-a: b\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the server accepted header lines for a minute")
        answer = _read_until_closed(sock)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def _body_heads(length: int) -> dict[str, bytes]:
    """Request heads announcing a body of ``length`` bytes, per endpoint that reads one."""
    multipart = b"Content-Type: multipart/form-data; boundary=b\r\n"
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    size = b"Content-Length: %d\r\n\r\n" % length
    return {"async": b"POST /async HTTP/1.1\r\nHost: x\r\n" + multipart + size,
            "sync": b"POST /sync HTTP/1.1\r\nHost: x\r\nAccept: application/x-votable+xml\r\n"
            + form + size,
            "query": b"POST /query HTTP/1.1\r\nHost: x\r\n" + form + size,
            "api/catalog": b"POST /api/catalog HTTP/1.1\r\nHost: x\r\n" + multipart + size,
            "chunked": b"POST /links HTTP/1.1\r\nHost: x\r\n" + form
            + b"Transfer-Encoding: chunked\r\n\r\n"}


@pytest.mark.parametrize("endpoint", sorted(_body_heads(0)))
def test_a_body_that_stalls_is_closed_with_408(impatient: LiveServer, endpoint: str) -> None:
    head = _body_heads(100_000)[endpoint]
    piece = b"5\r\nID=ab\r\n" if endpoint == "chunked" else b"--b\r\nContent-Dispo"
    if endpoint in ("sync", "query"):
        piece = b"ID=ivo%3A%2F%2Fx&POS=CIR"
    with _connect(impatient) as sock:
        sock.sendall(head + piece)  # ... and nothing more
        text = _votable_error(_read_until_closed(sock), 408)
    assert "request body stalled" in text and "2 s" in text
    assert httpx.get(impatient.url("availability"), timeout=TIMEOUT).status_code == 200


@pytest.mark.slow
def test_a_slow_but_steady_body_is_not_cut(impatient: LiveServer) -> None:
    """The body limit is on pauses, not on the whole upload: 8 pieces half a second apart
    (4 s, twice the 2 s limit) make a job."""
    catalog = b"id,ra,dec\n" + b"".join(b"t%d,52.9,-28.1\n" % i for i in range(8))
    body = (b"--b\r\nContent-Disposition: form-data; name=\"UPLOAD\"\r\n\r\ncat,param:cat\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"cat\"; filename=\"c.csv\"\r\n\r\n"
            + catalog + b"\r\n--b--\r\n")
    step = len(body) // 8 + 1
    with _connect(impatient) as sock:
        sock.sendall(_body_heads(len(body))["async"].replace(b"Host: x\r\n",
                                                             b"Host: x\r\nConnection: close\r\n"))
        for start in range(0, len(body), step):
            time.sleep(0.5)
            sock.sendall(body[start:start + step])
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 303 "), answer[:300]
    location = next(line.split(b": ", 1)[1] for line in answer.split(b"\r\n")
                    if line.lower().startswith(b"location: ")).decode()
    deleted = httpx.delete(impatient.url(urlsplit(location).path), timeout=TIMEOUT)
    assert deleted.status_code == 303  # the job existed


# -- CORS ---------------------------------------------------------------------------------

ORIGIN = "https://aladin.cds.unistra.fr"
VO_PATHS = ["sync", "async", "query", "links", "capabilities", "availability", "preview",
            "api/catalog"]


@pytest.mark.parametrize("path", VO_PATHS)
def test_a_refused_cors_preflight_is_a_dali_error(live_server: LiveServer, path: str) -> None:
    cases = [({"Access-Control-Request-Method": "PUT"}, ["'PUT'", "GET, HEAD, POST, DELETE"]),
             ({"Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, X-Secret"},
              ["'X-Secret'", "Authorization"]),
             ({"Access-Control-Request-Method": "PATCH",
               "Access-Control-Request-Headers": "X-Other"}, ["'PATCH'", "'X-Other'"])]
    for headers, words in cases:
        response = httpx.options(live_server.url(path), timeout=TIMEOUT,
                                 headers={"Origin": ORIGIN, **headers})
        text = assert_dali_error(response, 400, contains="cross-origin request refused")
        assert all(word in text for word in words), text
        assert response.headers["access-control-allow-origin"] == "*"
    allowed = httpx.options(live_server.url(path), timeout=TIMEOUT, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert allowed.status_code == 200
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
