"""Hostile VOTables for the upload tests: entity expansion ("billion laughs") and an
external entity. A safe reader refuses both before any XML parser runs."""

_LAUGH_LEVELS = "\n".join(
    f' <!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(2, 10)
).replace("&lol1;", "&lol;")

_TABLE = """<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>
<FIELD name="id" datatype="char" arraysize="*"/><FIELD name="ra" datatype="double"/>
<FIELD name="dec" datatype="double"/>
<DATA><TABLEDATA><TR><TD>{cell}</TD><TD>52.9</TD><TD>-28.1</TD></TR></TABLEDATA></DATA>
</TABLE></RESOURCE></VOTABLE>
"""

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + _LAUGH_LEVELS + "\n]>\n" + _TABLE.format(cell="&lol9;")
).encode()

EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE VOTABLE [ <!ENTITY secret SYSTEM "file:///etc/passwd"> ]>\n'
    + _TABLE.format(cell="&secret;")
).encode()

# --- external references: astropy follows <STREAM href> in BINARY, BINARY2 and FITS data ----

_STREAM_TABLE = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>
<FIELD name="id" datatype="char" arraysize="*"/><FIELD name="ra" datatype="double"/>
<FIELD name="dec" datatype="double"/>
<DATA>{data}</DATA>
</TABLE></RESOURCE></VOTABLE>
"""
SERIALISATIONS = {
    "BINARY": '<BINARY><STREAM href="{href}"/></BINARY>',
    "BINARY2": '<BINARY2><STREAM href="{href}"/></BINARY2>',
    "FITS": '<FITS extnum="1"><STREAM href="{href}"/></FITS>',
}
# The same reference spelled as astropy would still follow it, or other ways XML can point
# outside the document.
REFERENCE_VARIANTS = {
    "namespace prefix": '<v:BINARY xmlns:v="http://www.ivoa.net/xml/VOTable/v1.3">'
                        '<v:STREAM href="{href}"/></v:BINARY>',
    "prefixed href": '<BINARY><STREAM xmlns:x="urn:x" x:href="{href}"/></BINARY>',
    "lower case": '<BINARY><stream HREF="{href}"/></BINARY>',
    "gzip encoding": '<BINARY2><STREAM encoding="gzip" href="{href}"/></BINARY2>',
    "XInclude": '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{href}"/>',
    "XInclude 2003": '<xi:include xmlns:xi="http://www.w3.org/2003/XInclude" parse="text" '
                     'href="{href}"/>',
}


def external_stream(serialisation: str, href: str) -> bytes:
    """A VOTable whose data is not in the file but at ``href`` (a serialisation or a
    variant of :data:`SERIALISATIONS` / :data:`REFERENCE_VARIANTS`)."""
    element = {**SERIALISATIONS, **REFERENCE_VARIANTS}[serialisation]
    return _STREAM_TABLE.format(data=element.format(href=href)).encode()
