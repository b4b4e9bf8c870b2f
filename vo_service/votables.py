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
    return write_xml(votable)


def write_xml(votable: VOTableFile, serialization: str = "tabledata") -> bytes:
    """``votable`` as XML, its tables in ``serialization`` (tabledata, binary, binary2).

    Never astropy's C TABLEDATA writer: it writes one byte past its row buffer when a row's
    XML is exactly 2**n bytes long (astropy 8.0 io/votable/src/tablewriter.c), corrupting
    the heap (a crash later). Its Python writer gives the same bytes, ~20 % slower.
    """
    buffer = io.BytesIO()
    votable.to_xml(buffer, tabledata_format=serialization, _debug_python_based_parser=True)
    return buffer.getvalue()


def load_template(name: str) -> VOTableFile:
    """Parse ``votable_templates/<name>``: the FIELDs and PARAMs of one kind of response."""
    return parse_votable(str(TEMPLATES / name), verify="exception")


def fill_rows(table: VOTableTable, rows: Sequence[Mapping[str, object]]) -> None:
    """Fill a template TABLE with ``rows`` (dicts by FIELD name); None or absent = null."""
    table.create_arrays(len(rows))
    table._nrows = None  # the template's parsed nrows=0 would be written out otherwise
    for field_ in table.fields:
        is_text = field_.datatype in ("char", "unicodeChar")
        fill_column(table.array, field_.name, [row.get(field_.name) for row in rows],
                    is_text=is_text,
                    is_array=not is_text and field_.arraysize not in (None, "1"))


def fill_column(array: np.ma.MaskedArray, name: str, values: Sequence[object], *,
                is_text: bool, is_array: bool) -> None:
    """Column ``name`` of a created table array from ``values``: None and NaN are nulls
    (masked; empty text, an empty or NaN-filled array), arrays are float vectors. A
    fixed-size array cell (a point: 2) takes only a value of its size; another is a null.
    Variable-length cells hold masked arrays, as astropy's BINARY2 writer needs."""
    column = array[name]
    cell_shape = column.shape[1:]  # (2,) for double[2]; () for scalars and double[*]
    for index, value in enumerate(values):
        if is_array and value is not None:
            numbers = np.asarray(value, dtype=float)  # a mask per element, for BINARY2
            value = np.ma.array(numbers, mask=np.zeros(numbers.shape, dtype=bool))
            if cell_shape and value.shape != cell_shape:
                value = None  # not a value of this column's size (a short point)
        null = value is None or (isinstance(value, float) and math.isnan(value))
        if value is None:
            if is_text:
                value = ""
            elif is_array:
                value = np.full(cell_shape, np.nan) if cell_shape else \
                    np.ma.array([], mask=np.zeros(0, dtype=bool))
        if value is not None:
            if is_array and not cell_shape:  # an object cell holds the masked array itself
                column.data[index] = value
            else:
                column[index] = value
        if null:  # after the value: setting a value unmasks its cell
            array.mask[name][index] = True
