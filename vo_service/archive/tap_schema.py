"""What TAP publishes: ``ivoa.obscore`` over the index, the five ``TAP_SCHEMA`` tables, and
the metadata (VOTable types, units, UCDs, utypes) that types every query result.

The ObsCore columns' metadata is read from ``votable_templates/sia_results.xml``, the same
FIELDs SIA 2 answers with, so the two protocols cannot disagree. Each table knows the SQLite
relation that holds its rows (``sql_name``); :mod:`vo_service.archive.tap_query` creates
them in a read-only connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from lxml import etree

TEMPLATES = Path(__file__).resolve().parents[2] / "votable_templates"
VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
OBSCORE_MODEL = "ivo://ivoa.net/std/ObsCore#core-1.1"
OBSCORE_TABLE = "ivoa.obscore"
# ObsCore columns with an index behind them (TAP_SCHEMA.columns.indexed).
INDEXED = {"obs_publisher_did", "obs_collection", "band", "product_type", "s_dec", "s_region",
           "instrument_name"}
# Standard ObsCore columns (std = 1); band and product_type are this archive's additions.
NON_STANDARD = {"band", "product_type"}


@dataclass(frozen=True)
class ColumnMeta:
    """One column: VOTable type (datatype, arraysize, xtype) and descriptive metadata."""

    name: str
    datatype: str
    arraysize: str | None = None
    xtype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    description: str | None = None
    indexed: bool = False
    principal: bool = True
    std: bool = False
    sql_name: str = ""  # the SQLite column; the name itself unless set

    @property
    def sql(self) -> str:
        return self.sql_name or self.name


@dataclass(frozen=True)
class TableMeta:
    """One queryable table: qualified ADQL name, its columns and where its rows live."""

    schema: str
    name: str  # qualified, as used in queries and TAP_SCHEMA: "ivoa.obscore"
    columns: tuple[ColumnMeta, ...]
    sql_name: str  # the SQLite relation
    description: str = ""
    utype: str | None = None
    table_type: str = "table"

    def column(self, name: str) -> ColumnMeta | None:
        lowered = name.lower()
        return next((c for c in self.columns if c.name.lower() == lowered), None)


@dataclass(frozen=True)
class ForeignKey:
    """A TAP_SCHEMA.keys row with its column pairs."""

    key_id: str
    from_table: str
    target_table: str
    columns: tuple[tuple[str, str], ...]
    description: str = ""


@lru_cache(maxsize=1)
def obscore_table() -> TableMeta:
    """``ivoa.obscore``: every FIELD of the SIA results template, in its order."""
    tree = etree.parse(str(TEMPLATES / "sia_results.xml"))
    columns = []
    for element in tree.iter(f"{{{VOTABLE_NS}}}FIELD"):
        name = element.get("name")
        description = element.findtext(f"{{{VOTABLE_NS}}}DESCRIPTION")
        column = ColumnMeta(
            name=name, datatype=element.get("datatype"), arraysize=element.get("arraysize"),
            xtype=element.get("xtype"), unit=element.get("unit"), ucd=element.get("ucd"),
            utype=element.get("utype"), description=description, indexed=name in INDEXED,
            std=name not in NON_STANDARD)
        if name == "s_region":
            # ObsCore 1.1 §4 (and taplint): an ADQL region, written as STC-S; SIA keeps the
            # DALI polygon. Geometry functions read either.
            column = replace(column, datatype="char", arraysize="*", xtype="adql:REGION",
                             unit=None, description="footprint as an STC-S polygon (ICRS)")
        columns.append(column)
    return TableMeta("ivoa", OBSCORE_TABLE, tuple(columns), "tap_obscore",
                     "ObsCore 1.1: one row per served image HDU; access_url is its DataLink "
                     "document, from which SODA cuts it", utype="ivo://ivoa.net/std/obscore#table")


def _text(name: str, description: str, size: str = "64*", **changes: object) -> ColumnMeta:
    return ColumnMeta(name, "char", size, description=description, std=True,
                      **changes)  # type: ignore[arg-type]


def _int(name: str, description: str) -> ColumnMeta:
    return ColumnMeta(name, "int", description=description, std=True)


TAP_SCHEMA_TABLES = (
    TableMeta("tap_schema", "tap_schema.schemas", (
        _text("schema_name", "schema name, as used in queries"),
        _text("utype", "utype of the schema", "512*"),
        _text("description", "what the schema holds", "8000*"),
        _int("schema_index", "recommended order of display"),
    ), "tap_schema_schemas", "the schemas of this service"),
    TableMeta("tap_schema", "tap_schema.tables", (
        _text("schema_name", "schema the table belongs to"),
        _text("table_name", "qualified table name, as used in queries", "128*"),
        _text("table_type", "table or view", "8*"),
        _text("utype", "utype of the table", "512*"),
        _text("description", "what the table holds", "8000*"),
        _int("table_index", "recommended order of display"),
    ), "tap_schema_tables", "the tables of this service"),
    TableMeta("tap_schema", "tap_schema.columns", (
        _text("table_name", "qualified table name", "128*"),
        _text("column_name", "column name, as used in queries"),
        _text("datatype", "VOTable datatype", "16*"),
        _text("arraysize", "VOTable arraysize", "16*"),
        _text("xtype", "VOTable xtype", "32*"),
        ColumnMeta('"size"', "int", description="length of fixed-length arrays (deprecated)",
                   std=True, sql_name="size"),
        _text("description", "what the column holds", "8000*"),
        _text("utype", "utype of the column", "512*"),
        _text("unit", "VO unit", "64*"),
        _text("ucd", "UCD", "128*"),
        _int("indexed", "1 if the column is indexed"),
        _int("principal", "1 if the column is shown by default"),
        _int("std", "1 if a standard defines the column"),
        _int("column_index", "recommended order of display"),
    ), "tap_schema_columns", "the columns of every table"),
    TableMeta("tap_schema", "tap_schema.keys", (
        _text("key_id", "identifier of the foreign key"),
        _text("from_table", "table holding the key", "128*"),
        _text("target_table", "table the key points to", "128*"),
        _text("description", "what the key means", "8000*"),
        _text("utype", "utype of the key", "512*"),
    ), "tap_schema_keys", "foreign keys between tables"),
    TableMeta("tap_schema", "tap_schema.key_columns", (
        _text("key_id", "identifier of the foreign key"),
        _text("from_column", "column of the key in from_table"),
        _text("target_column", "column in target_table"),
    ), "tap_schema_key_columns", "the columns of each foreign key"),
)

FOREIGN_KEYS = (
    ForeignKey("tables_schema", "tap_schema.tables", "tap_schema.schemas",
               (("schema_name", "schema_name"),), "the schema of a table"),
    ForeignKey("columns_table", "tap_schema.columns", "tap_schema.tables",
               (("table_name", "table_name"),), "the table of a column"),
    ForeignKey("keys_from", "tap_schema.keys", "tap_schema.tables",
               (("from_table", "table_name"),), "the table holding a key"),
    ForeignKey("keys_target", "tap_schema.keys", "tap_schema.tables",
               (("target_table", "table_name"),), "the table a key points to"),
    ForeignKey("key_columns_key", "tap_schema.key_columns", "tap_schema.keys",
               (("key_id", "key_id"),), "the key of a key column"),
)

SCHEMAS = (
    ("ivoa", "IVOA data models: the ObsCore table of the archive's images"),
    ("tap_schema", "TAP 1.1 metadata of this service"),
)


def published_tables() -> tuple[TableMeta, ...]:
    """Every table in TAP_SCHEMA, in display order."""
    return (obscore_table(), *TAP_SCHEMA_TABLES)


@dataclass
class SchemaRows:
    """The rows of the five TAP_SCHEMA tables (by table name)."""

    rows: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)


def tap_schema_rows(tables: tuple[TableMeta, ...] | None = None) -> SchemaRows:
    """TAP_SCHEMA content describing ``tables`` (default: every published table)."""
    tables = tables or published_tables()
    out = SchemaRows()
    out.rows["tap_schema.schemas"] = [
        (name, None, description, index) for index, (name, description) in enumerate(SCHEMAS)]
    out.rows["tap_schema.tables"] = [
        (t.schema, t.name, t.table_type, t.utype, t.description, index)
        for index, t in enumerate(tables)]
    out.rows["tap_schema.columns"] = [
        (t.name, c.name, c.datatype, c.arraysize, c.xtype, _size(c.arraysize), c.description,
         c.utype, c.unit, c.ucd, int(c.indexed), int(c.principal), int(c.std), index)
        for t in tables for index, c in enumerate(t.columns)]
    out.rows["tap_schema.keys"] = [
        (k.key_id, k.from_table, k.target_table, k.description, None) for k in FOREIGN_KEYS]
    out.rows["tap_schema.key_columns"] = [
        (k.key_id, source, target) for k in FOREIGN_KEYS for source, target in k.columns]
    return out


def _size(arraysize: str | None) -> int | None:
    """TAP_SCHEMA ``"size"``: the length of a one-dimensional arraysize (``64*`` -> 64, as
    taplint checks), null for scalars and ``*``."""
    digits = (arraysize or "").rstrip("*")
    return int(digits) if digits.isdigit() else None


def with_sql_name(column: ColumnMeta, sql_name: str) -> ColumnMeta:
    """``column`` stored in SQLite under another name (upload tables)."""
    return replace(column, sql_name=sql_name)
