"""VOTable documents from templates: the FIELDs and PARAMs of each kind of answer are
declared in ``votable_templates/``; code fills the rows with astropy and writes VOTable 1.4.

Below the protocols and the products (the manifest of a catalog job is written here too),
knowing nothing of HTTP.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.io.votable import parse as parse_votable
from astropy.io.votable.tree import TableElement as VOTableTable
from astropy.io.votable.tree import VOTableFile
from astropy.table import Table

TEMPLATES = Path(__file__).resolve().parents[1] / "votable_templates"
VOTABLE_VERSION = "1.4"


def votable_bytes(votable: VOTableFile | Table) -> bytes:
    """Serialise a VOTable (or an astropy Table) as VOTable 1.4 TABLEDATA.

    The version is set explicitly: newer astropy releases default to a newer VOTable
    version that common validators and clients reject (DESIGN: decisions).
    """
    if isinstance(votable, Table):
        votable = VOTableFile.from_table(votable)
    votable.version = VOTABLE_VERSION
    buffer = io.BytesIO()
    # Not astropy's C TABLEDATA writer: it writes one byte past its row buffer when a row's
    # XML is exactly 2**n bytes long (astropy 8.0 io/votable/src/tablewriter.c), corrupting
    # the heap (a crash later). Its Python writer gives the same bytes, ~20 % slower.
    votable.to_xml(buffer, tabledata_format="tabledata", _debug_python_based_parser=True)
    return buffer.getvalue()


def load_template(name: str) -> VOTableFile:
    """Parse ``votable_templates/<name>``: the FIELDs and PARAMs of one kind of response."""
    return parse_votable(str(TEMPLATES / name), verify="exception")


def fill_rows(table: VOTableTable, rows: Sequence[Mapping[str, object]]) -> None:
    """Fill a template TABLE with ``rows`` (dicts by FIELD name); None or absent = null."""
    table.create_arrays(len(rows))
    table._nrows = None  # the template's parsed nrows=0 would be written out otherwise
    array = table.array
    for field_ in table.fields:
        name = field_.name
        is_text = field_.datatype in ("char", "unicodeChar")
        is_array = not is_text and field_.arraysize not in (None, "1")
        for index, row in enumerate(rows):
            value = row.get(name)
            if value is None:
                array.mask[name][index] = True
                if is_text:
                    array[name][index] = ""
                elif is_array:
                    array[name][index] = np.zeros(0)
            else:
                array[name][index] = np.asarray(value, dtype=float) if is_array else value
                if isinstance(value, float) and math.isnan(value):
                    array.mask[name][index] = True
