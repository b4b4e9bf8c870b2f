"""The VOTable type of every output column, from TAP_SCHEMA metadata and ADQL's rules.

A selected column keeps its table's metadata (datatype, arraysize, xtype, unit, UCD, utype);
an expression gets the type ADQL gives it (COUNT → long, geometry constructors → DALI
point/circle/polygon, arithmetic → double unless all integers, ...). SQLite's own loose
types never decide what a client sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, walk_in_scope

from vo_service.archive.tap_schema import ColumnMeta, TableMeta

INTEGERS = {"short", "int", "long", "unsignedByte"}
FLOATS = {"float", "double"}
_SQL_TYPES = {"short": "SMALLINT", "int": "INT", "long": "BIGINT", "float": "FLOAT",
              "double": "DOUBLE", "boolean": "BOOLEAN", "unsignedByte": "SMALLINT"}


def sql_type(column: ColumnMeta) -> str:
    """The SQL type sqlglot is told a column has."""
    if column.arraysize and column.datatype not in ("char", "unicodeChar"):
        return "VARCHAR"
    return _SQL_TYPES.get(column.datatype, "VARCHAR")


def _meta(datatype: str, arraysize: str | None = None, xtype: str | None = None,
          unit: str | None = None, ucd: str | None = None) -> ColumnMeta:
    return ColumnMeta("", datatype, arraysize, xtype, unit, ucd)


DOUBLE = _meta("double")
LONG = _meta("long")
TEXT = _meta("char", "*")
POINT = _meta("double", "2", "point", "deg", "pos.eq")
CIRCLE = _meta("double", "3", "circle", "deg")
POLYGON = _meta("double", "*", "polygon", "deg")
GEOMETRY_TYPES = {
    "POINT": POINT, "CENTROID": POINT, "CIRCLE": CIRCLE, "POLYGON": POLYGON, "BOX": POLYGON,
    "CONTAINS": _meta("int"), "INTERSECTS": _meta("int"),
    "DISTANCE": _meta("double", unit="deg", ucd="pos.angDistance"),
    "COORD1": _meta("double", unit="deg", ucd="pos.eq.ra"),
    "COORD2": _meta("double", unit="deg", ucd="pos.eq.dec"),
    "AREA": _meta("double", unit="deg**2"), "COORDSYS": TEXT,
}
_CAST_TYPES = {
    exp.DataType.Type.SMALLINT: "short", exp.DataType.Type.INT: "int",
    exp.DataType.Type.BIGINT: "long", exp.DataType.Type.FLOAT: "float",
    exp.DataType.Type.DOUBLE: "double",
}


def output_columns(tree: exp.Expression, scope: Scope, tables: Mapping[str, TableMeta]
                   ) -> tuple[ColumnMeta, ...]:
    """The FIELDs of the result: names (aliases; unnamed expressions named after their
    function, made unique) and types, in SELECT order (the left query of a set operation)."""
    select = tree
    while isinstance(select, exp.Union | exp.Intersect | exp.Except):
        select = select.this
        scope = scope.set_operation_scopes[0] if scope.set_operation_scopes else scope
    if isinstance(select, exp.Subquery):
        select = select.this
    columns: list[ColumnMeta] = []
    seen: set[str] = set()
    for projection in select.expressions:
        meta = infer(projection, scope, tables)
        name = projection.alias_or_name
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(inner, exp.Column) and meta.name and \
                meta.name.strip('"').lower() == name.lower():
            name = meta.name.strip('"')  # a table's column keeps its own spelling
        if not name or name.startswith("_col_"):
            inner = projection.this if isinstance(projection, exp.Alias) else projection
            name = _expression_name(inner)
        unique, number = name, 1
        while unique.lower() in seen:
            number += 1
            unique = f"{name}_{number}"
        seen.add(unique.lower())
        columns.append(replace(meta, name=unique, sql_name=""))
    return tuple(columns)


def _expression_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    if isinstance(node, exp.Func):
        return node.key.lower()
    return "expr"


def infer(node: exp.Expression, scope: Scope, tables: Mapping[str, TableMeta]) -> ColumnMeta:
    """The metadata of one expression in ``scope``."""
    if isinstance(node, exp.Alias | exp.Paren):
        return infer(node.this, scope, tables)
    if isinstance(node, exp.Column):
        return _column(node, scope, tables)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return TEXT
        return LONG if node.this.isdigit() else DOUBLE
    if isinstance(node, exp.Anonymous):
        return GEOMETRY_TYPES.get(str(node.this).upper(), DOUBLE)
    if isinstance(node, exp.Contains):
        return GEOMETRY_TYPES["CONTAINS"]
    if isinstance(node, exp.Count):
        return _meta("long", ucd="meta.number")
    if isinstance(node, exp.Avg | exp.Div):
        return DOUBLE
    if isinstance(node, exp.Min | exp.Max | exp.Coalesce | exp.Neg | exp.Abs):
        inner = infer(node.this, scope, tables)
        return replace(inner, name="", indexed=False, principal=True, std=False) \
            if not isinstance(node, exp.Abs) else _numeric(inner)
    if isinstance(node, exp.Sum):
        return _numeric(infer(node.this, scope, tables), widen=True)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Mod):
        left = infer(node.this, scope, tables)
        right = infer(node.expression, scope, tables)
        if left.datatype in INTEGERS and right.datatype in INTEGERS:
            return LONG
        return DOUBLE
    if isinstance(node, exp.DPipe | exp.Lower | exp.Upper):
        return TEXT
    if isinstance(node, exp.Cast):
        target = node.to.this if isinstance(node.to, exp.DataType) else None
        if target in _CAST_TYPES:
            return _meta(_CAST_TYPES[target])
        return TEXT
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select):
        inner_scope = next((s for s in scope.subquery_scopes if s.expression is node.this),
                           scope)
        return infer(node.this.expressions[0], inner_scope, tables)
    if isinstance(node, exp.Predicate | exp.Not | exp.And | exp.Or):
        return _meta("int")
    return DOUBLE


def _numeric(meta: ColumnMeta, widen: bool = False) -> ColumnMeta:
    if meta.datatype in INTEGERS:
        return LONG if widen else _meta(meta.datatype)
    return DOUBLE


def _column(node: exp.Column, scope: Scope, tables: Mapping[str, TableMeta]) -> ColumnMeta:
    source = scope.sources.get(node.table)
    name = node.name
    if isinstance(source, exp.Table):
        meta = tables.get(f"{source.db}.{source.name}".lower())
        if meta is not None:
            for column in meta.columns:
                stored = column.name
                key = stored[1:-1] if stored.startswith('"') else stored.lower()
                if key == name or stored.lower() == name.lower():
                    return column
        return TEXT
    if isinstance(source, Scope):
        select = source.expression
        while isinstance(select, exp.Union | exp.Intersect | exp.Except):
            source = source.set_operation_scopes[0] if source.set_operation_scopes else source
            select = select.this
        if isinstance(select, exp.Select):
            for projection in select.expressions:
                if projection.alias_or_name == name:
                    return infer(projection, source, None or tables)
    return TEXT


# Operations that take numbers (ADQL 2.1 §2.3: numeric value expressions) or text; SQLite
# would read text or a geometry as 0, or show a geometry's inner form, without a word.
_NUMERIC_OPERATIONS = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Abs,
                       exp.Sum, exp.Avg, exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pow,
                       exp.Round, exp.Floor, exp.Ceil)
_TEXT_OPERATIONS = (exp.DPipe, exp.Lower, exp.Upper, exp.Like, exp.ILike)
_GEOMETRY_FUNCTIONS = {"POINT", "CIRCLE", "POLYGON", "BOX", "CENTROID"}


def wrong_operand(scopes: list[Scope], tables: Mapping[str, TableMeta]
                  ) -> tuple[exp.Expression, exp.Expression, str, str] | None:
    """The first (operation, operand, what it is, what the operation takes) where a numeric
    operation gets text or a geometry, or a text operation a geometry; or None. Only
    operands known for sure count (a text or geometry column, a string literal, a geometry
    constructor, text functions): anything else passes."""
    for scope in scopes:
        for node in walk_in_scope(scope.expression):
            if isinstance(node, _NUMERIC_OPERATIONS):
                takes, refused = "numbers", ("text", "a geometry")
            elif isinstance(node, _TEXT_OPERATIONS):
                takes, refused = "text", ("a geometry",)
            else:
                continue
            for operand in (node.this, node.args.get("expression")):
                what = _text_or_geometry(operand, scope, tables) \
                    if isinstance(operand, exp.Expression) else None
                if what in refused:
                    return node, operand, what, takes
    return None


def _text_or_geometry(node: exp.Expression, scope: Scope, tables: Mapping[str, TableMeta]
                      ) -> str | None:
    while isinstance(node, exp.Paren | exp.Alias):
        node = node.this
    if isinstance(node, exp.Literal):
        return "text" if node.is_string else None
    if isinstance(node, exp.DPipe | exp.Lower | exp.Upper):
        return "text"
    if isinstance(node, exp.Anonymous):
        return "a geometry" if str(node.this).upper() in _GEOMETRY_FUNCTIONS else None
    source = scope.sources.get(node.table) if isinstance(node, exp.Column) else None
    if isinstance(source, Scope):
        # a derived table's or CTE's column: what its SELECT gives under that name; of a
        # UNION (INTERSECT, EXCEPT), named by its first SELECT, the column at that place in
        # every SELECT, known only when they all agree
        branches = _set_operation_branches(source)
        names = [projection.alias_or_name for projection in
                 (branches[0].expression.expressions if branches else ())]
        if node.name not in names:
            return None
        place = names.index(node.name)
        found = {_text_or_geometry(branch.expression.expressions[place], branch, tables)
                 if place < len(branch.expression.expressions) else None
                 for branch in branches}
        return found.pop() if len(found) == 1 else None
    if isinstance(node, exp.Column) and isinstance(source, exp.Table):
        column = _column(node, scope, tables)
        if column is TEXT:  # not found: not for this check to say
            return None
        if column.xtype and (column.xtype.lower() in ("point", "circle", "polygon")
                             or column.xtype.lower().endswith("region")):
            return "a geometry"
        if column.datatype in ("char", "unicodeChar"):
            return "text"
    return None


def _set_operation_branches(scope: Scope) -> list[Scope]:
    """The SELECT scopes of a set operation's scope, left to right (nested ones too)."""
    if not isinstance(scope.expression, exp.SetOperation):
        return [scope] if isinstance(scope.expression, exp.Select) else []
    return [branch for part in scope.set_operation_scopes
            for branch in _set_operation_branches(part)]


def ungrouped_column(scopes: list[Scope]) -> exp.Column | None:
    """A column selected beside an aggregate (COUNT, SUM, ...) in a SELECT without GROUP
    BY, or None. SQL refuses it; SQLite answers with the column of some row."""
    for scope in scopes:
        select = scope.expression
        if not isinstance(select, exp.Select) or select.args.get("group"):
            continue
        aggregated = bare = None
        for projection in select.expressions:
            for node in walk_in_scope(projection):
                if isinstance(node, exp.AggFunc):
                    aggregated = aggregated or node
                elif isinstance(node, exp.Column) and node.find_ancestor(exp.AggFunc) is None:
                    bare = bare or node
        if aggregated is not None and bare is not None:
            return bare
    return None
