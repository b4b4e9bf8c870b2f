"""VOSI 1.1 tables (``<tap>/tables``): the published tables as ``vosi:tableset``, built from
the same metadata as TAP_SCHEMA (:mod:`vo_service.archive.tap_schema`), so the two agree."""

from __future__ import annotations

from lxml import etree

from vo_service.archive.tap_schema import (
    FOREIGN_KEYS,
    SCHEMAS,
    ColumnMeta,
    TableMeta,
    published_tables,
)

VOSI_TABLES_NS = "http://www.ivoa.net/xml/VOSITables/v1.0"
VS_NS = "http://www.ivoa.net/xml/VODataService/v1.1"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
# astroquery's Tap/TapPlus (ESA's TAP+ client) read an ``esatapplus:flags`` attribute on
# every column and fail without it. VODataService's wildcard for foreign attributes is
# strict (no schema declares this one), so only astroquery gets it (see tableset_document).
ESA_TAP_PLUS_NS = "http://esa.int/xml/EsaTapPlus"
NSMAP = {"vosi": VOSI_TABLES_NS, "vs": VS_NS, "xsi": XSI_NS}


def _sub(parent: etree._Element, tag: str, text: str | None) -> None:
    if text:
        etree.SubElement(parent, tag).text = text


def _column(parent: etree._Element, column: ColumnMeta, esa_flags: bool) -> None:
    element = etree.SubElement(parent, "column", std="true" if column.std else "false")
    if esa_flags:
        element.set(f"{{{ESA_TAP_PLUS_NS}}}flags", "0")
    _sub(element, "name", column.name)
    _sub(element, "description", column.description)
    _sub(element, "unit", column.unit)
    _sub(element, "ucd", column.ucd)
    _sub(element, "utype", column.utype)
    data_type = etree.SubElement(element, "dataType")
    data_type.set(f"{{{XSI_NS}}}type", "vs:VOTableType")
    if column.arraysize:
        data_type.set("arraysize", column.arraysize)
    if column.xtype:
        data_type.set("extendedType", column.xtype)
    data_type.text = column.datatype
    if column.indexed:
        _sub(element, "flag", "indexed")
    if column.principal:
        _sub(element, "flag", "principal")


def _table(parent: etree._Element | None, table: TableMeta, with_columns: bool,
           esa_flags: bool = False) -> etree._Element:
    if parent is None:
        element = etree.Element(f"{{{VOSI_TABLES_NS}}}table", nsmap=NSMAP)
    else:
        element = etree.SubElement(parent, "table")
    element.set("type", table.table_type)
    _sub(element, "name", table.name)
    _sub(element, "description", table.description)
    _sub(element, "utype", table.utype)
    if with_columns:
        for column in table.columns:
            _column(element, column, esa_flags)
        for key in FOREIGN_KEYS:
            if key.from_table != table.name:
                continue
            foreign = etree.SubElement(element, "foreignKey")
            _sub(foreign, "targetTable", key.target_table)
            for source, target in key.columns:
                pair = etree.SubElement(foreign, "fkColumn")
                _sub(pair, "fromColumn", source)
                _sub(pair, "targetColumn", target)
            _sub(foreign, "description", key.description)
    return element


def tableset_document(*, with_columns: bool = True, esa_flags: bool = False) -> bytes:
    """The ``vosi:tableset`` of every published table, grouped by schema (``esa_flags``:
    with astroquery's ``esatapplus:flags`` on the columns)."""
    nsmap = {**NSMAP, "esatapplus": ESA_TAP_PLUS_NS} if esa_flags else NSMAP
    root = etree.Element(f"{{{VOSI_TABLES_NS}}}tableset", nsmap=nsmap)
    tables = published_tables()
    for schema_name, description in SCHEMAS:
        schema = etree.SubElement(root, "schema")
        _sub(schema, "name", schema_name)
        _sub(schema, "description", description)
        for table in tables:
            if table.schema == schema_name:
                _table(schema, table, with_columns, esa_flags)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def table_document(name: str) -> bytes | None:
    """One ``vosi:table`` by its qualified name (case-insensitive), or None."""
    table = next((t for t in published_tables() if t.name.lower() == name.lower()), None)
    if table is None:
        return None
    return etree.tostring(_table(None, table, True), xml_declaration=True, encoding="UTF-8",
                          pretty_print=True)
