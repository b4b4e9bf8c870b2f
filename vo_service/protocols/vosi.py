"""VOSI 1.1: the capabilities and availability documents.

Capabilities are assembled with lxml from the fragments in ``capabilities/`` (one
``<capability>`` each, accessURLs written as ``{base}/<resource>``), so that the document
is schema-valid by construction: root ``vosi:capabilities``, unqualified children, no
default namespace (VOSI 1.1 §3.1; checklist §4).
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

from lxml import etree
from starlette.requests import Request
from starlette.responses import Response

from vo_service.protocols.dali import public_base_url

CAPABILITY_DIR = Path(__file__).resolve().parents[2] / "capabilities"
VOSI_CAP_NS = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"
VOSI_AVAIL_NS = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"
NSMAP = {
    "vosi": VOSI_CAP_NS,
    "vr": "http://www.ivoa.net/xml/VOResource/v1.0",
    "vs": "http://www.ivoa.net/xml/VODataService/v1.1",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "tr": "http://www.ivoa.net/xml/TAPRegExt/v1.0",
}
XML_MIME = "application/xml"
TOKEN_SECURITY_METHOD = "ivo://ivoa.net/sso#token"

# The fragment files, in document order, and the resource each describes.
FRAGMENTS = {
    "capabilities": "10-vosi-capabilities.xml",
    "availability": "20-vosi-availability.xml",
    "query": "30-sia-query.xml",
    "links": "40-datalink-links.xml",
    "sync": "50-soda-sync.xml",
    "async": "60-soda-async.xml",
    "examples": "70-dali-examples.xml",
    "coverage": "80-coverage-moc.xml",
    "tap": "80-tap.xml",
    "tables": "85-vosi-tables.xml",
}
# The VOSI resources of the TAP service at <base>/tap (TAP 1.1 §2: siblings of its
# capabilities), in the order of its own capabilities document.
TAP_RESOURCES = ("capabilities", "availability", "tables", "tap", "examples")


def capabilities_document(base: str, resources: Iterable[str], *,
                          security_method: str | None = None, tap_base: str | None = None,
                          values: dict[str, str] | None = None) -> bytes:
    """The ``vosi:capabilities`` document for ``resources`` (keys of :data:`FRAGMENTS`).

    ``{base}`` in accessURLs becomes ``base``, ``{tap}`` (the TAP service's own URLs)
    ``tap_base`` (default ``<base>/tap``); an element whose whole text is ``{name}`` gets
    ``values[name]`` (limits from the settings).

    With ``security_method`` (e.g. ``ivo://ivoa.net/sso#token``) every non-VOSI capability
    gets a second interface declaring it; VOSI ones stay anonymous (VOSI 1.1 §2).
    """
    root = etree.Element(etree.QName(VOSI_CAP_NS, "capabilities"), nsmap=NSMAP)
    parser = etree.XMLParser(remove_comments=True, remove_blank_text=True, no_network=True)
    wanted = set(resources)
    for resource, filename in FRAGMENTS.items():
        if resource not in wanted:
            continue
        capability = etree.parse(str(CAPABILITY_DIR / filename), parser).getroot()
        for url in capability.iter("accessURL"):
            url.text = (url.text or "").replace("{tap}", tap_base or f"{base}/tap").replace(
                "{base}", base)
        for element in capability.iter():
            text = (element.text or "").strip()
            if values and text.startswith("{") and text[1:-1] in values:
                element.text = values[text[1:-1]]
        if security_method and resource not in ("capabilities", "availability", "tables"):
            _add_secured_interface(capability, security_method)
        root.append(capability)
    # xsi:type values name vs:/vr:/tr: types, which lxml cannot see as namespace uses.
    etree.cleanup_namespaces(root, top_nsmap=NSMAP, keep_ns_prefixes=["vr", "vs", "tr"])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def capability_values(settings: object) -> dict[str, str]:
    """The TAP capability's limits (TAPRegExt 1.0 §2.3-2.6) from the settings."""
    from vo_service.products.tap_request import MAXREC_HARD

    limits = settings.limits  # type: ignore[attr-defined]
    return {"retention": str(int(limits.default_destruction_days * 86400)),
            "duration": str(int(limits.default_execution_duration)),
            "maxrec": str(int(limits.maxrec_default)), "maxrec_hard": str(MAXREC_HARD),
            "upload_bytes": str(int(limits.max_upload_bytes))}


def _add_secured_interface(capability: etree._Element, security_method: str) -> None:
    """Copy the first interface with a securityMethod after its URLs (VOResource order:
    accessURL+, mirrorURL*, securityMethod?, then the rest)."""
    first = capability.find("interface")
    if first is None:
        return
    secured = copy.deepcopy(first)
    urls = [child for child in secured if child.tag in ("accessURL", "mirrorURL")]
    method = etree.Element("securityMethod", standardID=security_method)
    if urls:
        urls[-1].addnext(method)
    else:
        secured.insert(0, method)
    first.addnext(secured)


def _last_modified(request: Request) -> str:
    started = getattr(request.app.state, "started", None) or datetime.now(UTC)
    return format_datetime(started.astimezone(UTC), usegmt=True)


def _not_modified_since(request: Request, last_modified: str) -> bool:
    since = request.headers.get("if-modified-since")
    if not since:
        return False
    try:
        return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


async def capabilities(request: Request) -> Response:
    """GET/HEAD ``/capabilities``; ``Last-Modified`` is the server start (VOSI 1.1 §3.1),
    and a client that has the document already gets 304."""
    last_modified = _last_modified(request)
    headers = {"Last-Modified": last_modified}
    if _not_modified_since(request, last_modified):
        return Response(status_code=304, headers=headers)
    resources = getattr(request.app.state, "vo_resources", FRAGMENTS.keys())
    secured = getattr(request.app.state, "auth_required", False)
    settings = getattr(request.app.state, "settings", None)
    body = capabilities_document(public_base_url(request), resources,
                                 security_method=TOKEN_SECURITY_METHOD if secured else None,
                                 values=capability_values(settings) if settings else None)
    return Response(body, media_type=XML_MIME, headers=headers)


def probe_index(index_path: Path) -> tuple[bool, str]:
    """Can the archive index be read? Returns (available, note for the document)."""
    if not index_path.exists():
        return False, f"the archive index {index_path.name} does not exist yet; run the indexer"
    try:
        uri = index_path.resolve().as_uri() + "?mode=ro"  # percent-encodes odd characters
        with sqlite3.connect(uri, uri=True, timeout=5) as connection:
            tables = [name for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")]
            if "images" in tables:
                (count,) = connection.execute("SELECT count(*) FROM images").fetchone()
                return True, f"accepting requests; {count} images indexed"
        return True, "accepting requests"
    except sqlite3.Error as exc:
        return False, f"the archive index cannot be read: {exc}"


def availability_document(available: bool, up_since: datetime | None, notes: list[str]) -> bytes:
    """The ``vosi:availability`` document (children in XSD order: available, upSince, note)."""
    root = etree.Element(etree.QName(VOSI_AVAIL_NS, "availability"), nsmap={"vosi": VOSI_AVAIL_NS})
    etree.SubElement(root, etree.QName(VOSI_AVAIL_NS, "available")).text = \
        "true" if available else "false"
    if up_since is not None and available:
        etree.SubElement(root, etree.QName(VOSI_AVAIL_NS, "upSince")).text = \
            up_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for note in notes:
        etree.SubElement(root, etree.QName(VOSI_AVAIL_NS, "note")).text = note
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


async def availability(request: Request) -> Response:
    """GET/HEAD ``/availability``: probes the index database on every call."""
    settings = request.app.state.settings
    available, note = probe_index(settings.index_path)
    if getattr(request.app.state, "draining", False):
        available, note = False, "shutting down; not accepting new requests"
    body = availability_document(available, getattr(request.app.state, "started", None), [note])
    return Response(body, media_type=XML_MIME, headers={"Cache-Control": "no-cache"})
