"""Run the real vo-service application under uvicorn on a loopback port, in a thread.

Tests talk to it with real clients (pyvo, httpx, a browser) exactly as a user would::

    from server import LiveServer, serve_archive

    with serve_archive(data_root, tmp_path) as server:
        pyvo.dal.SIA2Service(server.base_url).search(pos=(ra, dec, 0.1))

The pytest fixtures built on it (``live_server``, ``real_live_server``,
``live_server_factory``) live in ``tests/conftest_server.py``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl

import uvicorn

from vo_service.config import Limits, Settings

STARTUP_SECONDS = 60


@dataclass
class LiveServer:
    """A running server: ``base_url`` (no trailing slash), its ``settings`` and ``app``."""

    base_url: str
    settings: Settings
    app: object
    server: uvicorn.Server
    thread: threading.Thread

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (``"links?ID=..."`` or ``"/links"``)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def stop(self) -> None:
        """Ask uvicorn to finish (lifespan shutdown runs) and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(settings: Settings) -> LiveServer:
    """Index ``settings.data_roots``, then serve ``create_app(settings)`` on a free port."""
    from vo_service.app import create_app
    from vo_service.archive import index as archive_index
    from vo_service.request_timeouts import uvicorn_options

    archive_index.run_index(settings)
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it
    # uvicorn's separate header and body writes meet Nagle + delayed ACK (~40 ms a request).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                            **uvicorn_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name=f"vo-service:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start (see the log above)")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", settings, app, server, thread)


@contextlib.contextmanager
def serve_archive(data_root: Path, state_dir: Path, **changes: object) -> Iterator[LiveServer]:
    """Serve the FITS tree ``data_root`` with state in ``state_dir``; ``changes`` override
    settings (``limits=Limits(...)``, ``authority=...``)."""
    changes = {"limits": Limits(), **changes}
    settings = replace(Settings(), data_roots=(Path(data_root),), state_dir=Path(state_dir),
                       **changes)
    live = start_server(settings)
    try:
        yield live
    finally:
        live.stop()


# -- validating what the server answers (no network: schemas from ../shared) ------------

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "shared" / "standards" / "schemas"
_REMOTE_SCHEMAS = {
    "http://www.ivoa.net/xml/Xlink/xlink.xsd": "xlink.xsd",
    "http://www.ivoa.net/xml/VOResource/v1.0": "VOResource-v1.2.xsd",
    "http://www.ivoa.net/xml/VODataService/v1.1": "VODataService-v1.2.xsd",
    "http://www.ivoa.net/xml/STC/stc-v1.30.xsd": "STC-v1.3.xsd",
}
_schemas: dict[str, object] = {}


def load_schema(filename: str):  # -> lxml.etree.XMLSchema
    """An XSD from ``shared/standards/schemas`` with its imports resolved locally.

    ``capabilities-bundle.xsd`` validates VOSI capabilities (with ``vs:ParamHTTP``);
    ``VOSIAvailability-v1.0.xsd``, ``VOTable-v1.4.xsd``, ``UWS.xsd`` the others.
    """
    from lxml import etree

    class LocalSchemas(etree.Resolver):
        def resolve(self, url, pubid, context):  # noqa: ANN001, ANN201
            name = _REMOTE_SCHEMAS.get(url)
            return self.resolve_filename(str(SCHEMA_DIR / name), context) if name else None

    if filename not in _schemas:
        parser = etree.XMLParser(no_network=True)
        parser.resolvers.add(LocalSchemas())
        _schemas[filename] = etree.XMLSchema(etree.parse(str(SCHEMA_DIR / filename), parser))
    return _schemas[filename]


def assert_valid_votable(document: bytes):  # -> astropy VOTableFile
    """``document`` is VOTable 1.4, XSD-valid, and astropy's validator finds no violation
    (``astropy.io.votable.validate``); returns it parsed with ``verify="exception"``."""
    import io

    from astropy.io.votable import parse, validate
    from lxml import etree

    root = etree.fromstring(document)
    assert root.get("version") == "1.4", f"VOTable version {root.get('version')}, want 1.4"
    load_schema("VOTable-v1.4.xsd").assertValid(root)
    report = io.StringIO()
    assert validate(io.BytesIO(document), output=report), report.getvalue()
    return parse(io.BytesIO(document), verify="exception")


def query_status(votable) -> tuple[str, str]:  # noqa: ANN001
    """(value, text) of the last QUERY_STATUS INFO of the results RESOURCE."""
    resource = next(r for r in votable.resources if r.type == "results")
    infos = [i for i in resource.infos if i.name == "QUERY_STATUS"]
    if resource.tables:
        infos += [i for i in resource.tables[0].infos if i.name == "QUERY_STATUS"]
    return infos[-1].value, infos[-1].content or ""


VOTABLE_FORMATS = ("votable", "application/x-votable+xml", "text/xml", "application/xml")


def asks_for_votable(request) -> bool:  # noqa: ANN001 (an httpx.Request)
    """Whether a request asks for VOTable errors: ``Accept`` naming a VOTable type first,
    or RESPONSEFORMAT (query string or urlencoded body) naming one (the tests' Accept
    headers are simple; the service's full rule is tested in test_soda_sync.py)."""
    accept = request.headers.get("accept", "").lower()
    first = accept.split(",")[0].split(";")[0].strip()
    if first in ("application/x-votable+xml", "text/xml"):
        return True
    pairs = parse_qsl(request.url.query.decode(), keep_blank_values=True)
    if "urlencoded" in request.headers.get("content-type", ""):
        pairs += parse_qsl(request.content.decode(errors="replace"), keep_blank_values=True)
    return any(name.upper() == "RESPONSEFORMAT"
               and value.split(";")[0].strip().lower() in VOTABLE_FORMATS
               for name, value in pairs)


def error_text(response) -> str:  # noqa: ANN001 (an httpx.Response)
    """The ``<label>: <message>`` of an error answer, checked to have the form the service
    gives it (DESIGN "Errors"): text/plain from SODA /sync unless the request asked for a
    VOTable, else a valid DALI error VOTable with QUERY_STATUS=ERROR."""
    content_type = response.headers.get("content-type", "")
    if response.request.url.path.endswith("/sync") and not asks_for_votable(response.request):
        assert content_type.startswith("text/plain"), (content_type, response.text[:500])
        return response.text.strip()
    assert "votable" in content_type, (content_type, response.text[:500])
    value, text = query_status(assert_valid_votable(response.content))
    assert value == "ERROR", text
    return text

