"""Checks on an uploaded table's bytes before any table reader sees them.

An uploaded table is parsed from its own bytes only. astropy's VOTable reader follows
``<STREAM href="…">`` in BINARY, BINARY2, FITS and PARQUET data (``file:``, ``http:``, a
relative path), which would let an upload read the server's files or make it fetch URLs. So a
VOTable is refused, before astropy sees it, when it holds a DOCTYPE or ENTITY declaration, a
STREAM with an ``href`` or an XInclude element. Element and attribute names are compared
without namespace, prefix or case (astropy's reader ignores prefixes); only encodings that
every parser reads alike (UTF-8, ASCII, Latin-1) are accepted, so a byte search finds every
candidate element, and files that have one are walked with lxml (no DTD, no entities, no
network) to judge it exactly. FIELDs are counted the same cheap way, so a table with too
many columns is refused before the expensive parse; FITS tables are measured by their
``TFIELDS`` cards. No message here quotes the upload's content.
"""

from __future__ import annotations

import io
import re

from lxml import etree

from vo_service.catalogs.columns import CatalogError

_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']")
_SAFE_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1",
                   "iso_8859-1", "l1"}
# Start tags, with or without a namespace prefix (XML names cannot be escaped, and only
# ASCII-compatible encodings are accepted, so these byte patterns see every element).
_PREFIX = rb"<(?:[^\s<>/!?:=\"']+:)?"
_FIELD_TAG = re.compile(_PREFIX + rb"FIELD[\s/>]")
_CANDIDATE_TAG = re.compile(_PREFIX + rb"(?:STREAM|INCLUDE)[\s/>]", re.IGNORECASE)
_XINCLUDE_NAMESPACES = ("http://www.w3.org/2001/xinclude", "http://www.w3.org/2003/xinclude")
# A FITS header card is 80 bytes and every header starts on a 2880-byte block.
_TFIELDS = re.compile(rb"TFIELDS =\s*([0-9]{1,20})")
_CARD = 80


def _local(name: str) -> str:
    """``{namespace}local`` or ``prefix:local`` -> ``local``, upper case."""
    return name.rpartition("}")[2].rpartition(":")[2].upper()


def _namespace(name: str) -> str:
    return name[1:].partition("}")[0].lower() if name.startswith("{") else ""


def _check_encoding(data: bytes, name: str) -> None:
    declared = _DECLARED_ENCODING.match(data.lstrip(b"\xef\xbb\xbf")[:400])
    if declared and declared.group(1).decode("ascii", "replace").lower() not in _SAFE_ENCODINGS:
        raise CatalogError(f"{name}: the VOTable declares the encoding "
                           f"{declared.group(1).decode('ascii', 'replace')!r}; save it as UTF-8")


def _refused_element(element: etree._Element) -> str | None:
    """What makes ``element`` refer outside the document, or None."""
    tag = element.tag if isinstance(element.tag, str) else ""
    if _namespace(tag) in _XINCLUDE_NAMESPACES or (
            _local(tag) == "INCLUDE" and "xinclude" in _namespace(tag)):
        return "an XInclude element"
    if _local(tag) == "STREAM" and any(_local(key) == "HREF" for key in element.attrib):
        return "a STREAM element with an href"
    return None


def check_votable(data: bytes, name: str, max_columns: int) -> None:
    """Refuse a VOTable that refers to anything outside its own bytes or has more than
    ``max_columns`` FIELDs.

    Names cannot be escaped in XML, so a byte search finds every element that could be a
    STREAM or an XInclude; only a file with such candidates (BINARY/BINARY2 serialisations,
    whose element count is small) is walked with lxml to look at them exactly.

    Raises
    ------
    CatalogError
        A DOCTYPE/ENTITY declaration, a STREAM href, an XInclude element, an encoding
        other than UTF-8/ASCII/Latin-1, too many FIELDs, or (when walked) XML that is not
        well formed.
    """
    if _DTD.search(data):
        raise CatalogError(f"{name}: VOTables with a DOCTYPE or ENTITY declaration are refused "
                           "(entity expansion is unsafe); remove the declaration")
    _check_encoding(data, name)
    for count, _ in enumerate(_FIELD_TAG.finditer(data), start=1):
        if count > max_columns:
            raise CatalogError(_too_many(name, f"more than {max_columns:,}", max_columns))
    if _CANDIDATE_TAG.search(data):
        _walk_references(data, name)


def _walk_references(data: bytes, name: str) -> None:
    """Walk the elements (dropping each once passed) and refuse the first external
    reference."""
    walk = etree.iterparse(io.BytesIO(data), events=("start", "end"), load_dtd=False,
                           no_network=True, resolve_entities=False, dtd_validation=False,
                           recover=False, huge_tree=True)  # inline BINARY text > 10 MB
    try:
        for event, element in walk:
            if event == "end":  # keep memory flat: drop what the walk has passed
                element.clear(keep_tail=False)
                parent = element.getparent()
                while parent is not None and element.getprevious() is not None:
                    del parent[0]
                continue
            refused = _refused_element(element)
            if refused:
                raise CatalogError(
                    f"{name}: line {element.sourceline}: the VOTable refers to data outside "
                    f"itself ({refused}); only self-contained uploads are read: save the "
                    "table with TABLEDATA, or BINARY/BINARY2 data inline (base64)")
    except etree.XMLSyntaxError as error:
        raise CatalogError(f"{name}: malformed VOTable (line {error.lineno}: not well-formed "
                           "XML); check that it is a complete VOTable") from None


def check_fits_columns(data: bytes, name: str, max_columns: int) -> None:
    """Refuse a FITS file whose table header announces more than ``max_columns`` columns
    (read from the ``TFIELDS`` cards, before any header is parsed)."""
    for match in _TFIELDS.finditer(data):
        if match.start() % _CARD == 0 and int(match.group(1)) > max_columns:
            raise CatalogError(_too_many(name, f"{int(match.group(1)):,}", max_columns))


def check_column_count(count: int, name: str, max_columns: int) -> None:
    """Refuse a table with more than ``max_columns`` columns."""
    if count > max_columns:
        raise CatalogError(_too_many(name, f"{count:,}", max_columns))


def _too_many(name: str, count: str, max_columns: int) -> str:
    return (f"{name} has {count} columns; the limit is {max_columns:,}: keep only the "
            "columns the cutouts need (RA, Dec, ID, size)")
