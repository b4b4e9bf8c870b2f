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
NSMAP = {"vosi": VOSI_TABLES_NS, "vs": VS_NS, "xsi": XSI_NS}


def _sub(parent: etree._Element, tag: str, text: str | None) -> None:
    if text:
        etree.SubElement(parent, tag).text = text


def _column(parent: etree._Element, column: ColumnMeta) -> None:
    element = etree.SubElement(parent, "column", std="true" if column.std else "false")
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


def _table(parent: etree._Element | None, table: TableMeta, with_columns: bool
           ) -> etree._Element:
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
            _column(element, column)
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


def tableset_document(*, with_columns: bool = True) -> bytes:
    """The ``vosi:tableset`` of every published table, grouped by schema."""
    root = etree.Element(f"{{{VOSI_TABLES_NS}}}tableset", nsmap=NSMAP)
    tables = published_tables()
    for schema_name, description in SCHEMAS:
        schema = etree.SubElement(root, "schema")
        _sub(schema, "name", schema_name)
        _sub(schema, "description", description)
        for table in tables:
            if table.schema == schema_name:
                _table(schema, table, with_columns)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def table_document(name: str) -> bytes | None:
    """One ``vosi:table`` by its qualified name (case-insensitive), or None."""
    table = next((t for t in published_tables() if t.name.lower() == name.lower()), None)
    if table is None:
        return None
    return etree.tostring(_table(None, table, True), xml_declaration=True, encoding="UTF-8",
                          pretty_print=True)
