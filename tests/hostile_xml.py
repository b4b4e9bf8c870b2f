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
