"""ADQL text → one SQLite SELECT plus the metadata of every output column.

Steps: tokens (refuse LIMIT and a second statement, with their position) → sqlglot parse
(:mod:`~vo_service.products.adql.dialect`) → allow-list of node types and functions →
tables resolved against the published ones (+ uploads) → ``qualify`` (unknown or ambiguous
columns are errors; ``*`` expanded) → output metadata
(:mod:`~vo_service.products.adql.types`) → geometry and math functions renamed to the
SQLite functions of ``archive/tap_query`` → the index prefilter
(:mod:`~vo_service.products.adql.prefilter`) → SQLite text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope, traverse_scope
from sqlglot.schema import MappingSchema
from sqlglot.tokens import TokenType

from vo_service.archive.tap_schema import ColumnMeta, TableMeta
from vo_service.products.adql import prefilter, types
from vo_service.products.adql.dialect import ADQL
from vo_service.products.adql.errors import AdqlError

GEOMETRY = {"POINT", "CIRCLE", "POLYGON", "BOX", "CONTAINS", "INTERSECTS", "DISTANCE",
            "COORD1", "COORD2", "AREA", "CENTROID", "COORDSYS", "REGION"}
COORDINATE_SYSTEMS = {"", "icrs", "icrs geocenter", "icrs barycenter", "unknownframe"}
# Node types a query may contain; anything else (DDL, PRAGMA, window functions, ...) is
# refused before a table is looked up.
_ALLOWED_NAMES = (
    "Select Union Intersect Except From Join Table TableAlias Subquery With CTE Where Group "
    "Having Order Ordered Limit Offset Distinct Column Identifier Star Alias Literal Null "
    "Boolean Paren Neg Not And Or EQ NEQ GT GTE LT LTE Between In Is Like ILike Exists Add Sub "
    "Mul Div Mod DPipe Abs Ceil Degrees Exp Floor Ln Log Pi Pow Radians Sqrt Rand Round Trunc "
    "Acos Asin Atan Atan2 Cos Cot Sin Tan Lower Upper Count Avg Min Max Sum Coalesce Cast "
    "DataType DataTypeParam Anonymous Contains Tuple Var"
)
ALLOWED = tuple(getattr(exp, name) for name in _ALLOWED_NAMES.split() if hasattr(exp, name))
# sqlglot function nodes whose SQLite spelling differs from ADQL's meaning.
RENAMED = {exp.Trunc: "adql_truncate", exp.Rand: "adql_rand", exp.Cot: "adql_cot",
           exp.Mod: "mod"}


@dataclass(frozen=True)
class Translation:
    """The SQLite statement, the output columns (SELECT order) and the query's TOP."""

    sql: str
    columns: tuple[ColumnMeta, ...]
    top: int | None
    tables: tuple[str, ...]


def translate(query: str, tables: Sequence[TableMeta]) -> Translation:
    """Translate ADQL ``query`` over ``tables``; :class:`AdqlError` says what and where."""
    text = query.strip()
    if not text:
        raise AdqlError("QUERY is empty; give an ADQL SELECT statement")
    try:
        return _translate(text, tables)
    except RecursionError:
        raise AdqlError("the query is nested too deeply") from None


def _translate(text: str, tables: Sequence[TableMeta]) -> Translation:
    token_list = _tokens(text)
    tree = _parse(text, token_list)
    _check_nodes(tree, token_list)
    by_name = {table.name.lower(): table for table in tables}
    used = _resolve_tables(tree, by_name, token_list)
    schema = _sqlglot_schema(tuple(by_name.values()))
    try:
        tree = qualify(tree, schema=schema, dialect=ADQL, validate_qualify_columns=True,
                       quote_identifiers=False, expand_stars=True, identify=False)
    except OptimizeError as exc:
        raise _column_error(str(exc)) from None
    scopes = traverse_scope(tree)  # once: renaming below edits the nodes they point to
    if not scopes:
        raise AdqlError("the query selects nothing")
    columns = types.output_columns(tree, scopes[-1], by_name)
    if (column := types.ungrouped_column(scopes)) is not None:
        raise AdqlError(f"{column.name} is selected beside an aggregate but is neither in a "
                        f"GROUP BY nor aggregated; add GROUP BY {column.name}, or select "
                        f"e.g. MIN({column.name})", *_locate(token_list, column.name))
    if (wrong := types.wrong_operand(scopes, by_name)) is not None:
        operation, operand, what, takes = wrong
        word = _spelled(operand)
        shown = repr(word) if isinstance(operand, exp.Literal) else word
        raise AdqlError(f"{_spelled(operation)} takes {takes}, but {shown} is {what}; use a "
                        f"column of {takes} (see /tap/tables)", *_locate(token_list, word))
    top = _top(tree)
    _rename_sources(scopes, by_name)
    _rewrite_functions(tree)
    for scope in scopes:
        prefilter.add_index_constraints(scope)
    _contains_point(tree)
    sql = tree.sql(dialect="sqlite", identify=True, comments=False)
    return Translation(sql, columns, top, tuple(sorted(used)))


# --- parsing ------------------------------------------------------------------------------


MAX_COUNT = 2**63 - 1  # SQLite's integers: a larger TOP or OFFSET is a datatype mismatch


def _tokens(text: str) -> list[sqlglot.tokens.Token]:
    try:
        token_list = ADQL().tokenize(text)
    except TokenError as exc:
        raise AdqlError(f"cannot read the query: {exc}") from None
    for position, token in enumerate(token_list):
        if token.token_type == TokenType.LIMIT:
            raise AdqlError("LIMIT is not ADQL; write SELECT TOP n ... instead",
                            token.line, _start_column(token))
        if token.token_type == TokenType.SEMICOLON and position != len(token_list) - 1:
            raise AdqlError("only one statement is allowed per query; remove the ';' and "
                            "what follows", token.line, _start_column(token))
    return token_list


def _start_column(token: sqlglot.tokens.Token) -> int:
    """1-based column of a token's first character (sqlglot records its last)."""
    return max(1, token.col - len(token.text) + 1)


def _parse(text: str, token_list: list[sqlglot.tokens.Token]) -> exp.Expression:
    try:
        statements = [s for s in ADQL().parser().parse(token_list, text) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        description = str(first.get("description") or exc).split(". Line")[0]
        if "SENTINEL" in description:
            description = "the query ends too early"
        elif "<class" in description or "Token" in description:
            description = "an incomplete or misplaced expression"
        near = str(first.get("highlight") or "").strip()
        message = f"syntax error: {description}" + (f" near {near!r}" if near else "")
        raise AdqlError(message, first.get("line"), first.get("col")) from None
    if len(statements) != 1:
        raise AdqlError(f"a query is one SELECT statement, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.Union | exp.Intersect | exp.Except):
        raise AdqlError("a query must be one SELECT statement (SELECT ... FROM ...)")
    return tree


def _spelled(node: exp.Expression) -> str:
    """How a query spells an operation or an operand: for messages, and to find where."""
    if isinstance(node, exp.Column | exp.Literal):
        return node.name
    if isinstance(node, exp.Anonymous):
        return str(node.this)
    if isinstance(node, exp.DPipe):
        return "||"
    if isinstance(node, exp.Like | exp.ILike):
        return "LIKE"
    return node.key.upper() if isinstance(node, exp.Func) else "arithmetic"


def _locate(token_list: Sequence[sqlglot.tokens.Token], word: str
            ) -> tuple[int | None, int | None]:
    for token in token_list:
        if token.text.lower() == word.lower():
            return token.line, _start_column(token)
    return None, None


def _check_nodes(tree: exp.Expression, token_list: list[sqlglot.tokens.Token]) -> None:
    for node in tree.walk():
        if not isinstance(node, ALLOWED):
            name = node.key.upper()
            raise AdqlError(f"{name} is not supported in ADQL here", *_locate(
                token_list, node.sql(dialect=ADQL).split("(")[0].split()[0] if node.sql(
                    dialect=ADQL) else name))
        if isinstance(node, exp.Anonymous):
            _check_function(node, token_list)
        if isinstance(node, exp.Select) and node.args.get("from_", node.args.get("from")) \
                is None:
            raise AdqlError("every SELECT needs a FROM clause (ADQL 2.1 §2.2)",
                            *_locate(token_list, "SELECT"))
        if isinstance(node, exp.Select) and node.args.get("distinct") is not None and \
                node.args["distinct"].args.get("on"):
            raise AdqlError("DISTINCT ON is not ADQL", *_locate(token_list, "ON"))


def _check_function(node: exp.Anonymous, token_list: list[sqlglot.tokens.Token]) -> None:
    name = str(node.this).upper()
    if name not in GEOMETRY:
        raise AdqlError(f"unknown function {name}; ADQL functions and the geometry functions "
                        f"{', '.join(sorted(GEOMETRY - {'REGION'}))} are available",
                        *_locate(token_list, str(node.this)))
    if name == "REGION":
        raise AdqlError("REGION is not supported; use POINT, CIRCLE, POLYGON or BOX",
                        *_locate(token_list, str(node.this)))
    arguments = node.expressions
    if name in {"POINT", "CIRCLE", "POLYGON", "BOX"} and arguments and \
            isinstance(arguments[0], exp.Literal) and arguments[0].is_string:
        system = arguments[0].this.strip().lower()
        if system not in COORDINATE_SYSTEMS:
            raise AdqlError(f"{name}: coordinate system {arguments[0].this!r} is not known; "
                            "coordinates are ICRS: give 'ICRS' or '' (or leave it out)",
                            *_locate(token_list, str(node.this)))
        node.set("expressions", arguments[1:])
    counts = {"POINT": {2}, "CIRCLE": {2, 3}, "BOX": {3, 4}, "CONTAINS": {2},
              "INTERSECTS": {2}, "DISTANCE": {2, 4}, "COORD1": {1}, "COORD2": {1}, "AREA": {1},
              "CENTROID": {1}, "COORDSYS": {1}}
    count = len(node.expressions)
    if name == "POLYGON":
        if count < 3:
            raise AdqlError(f"POLYGON needs at least 3 vertices, got {count} arguments",
                            *_locate(token_list, str(node.this)))
    elif count not in counts[name]:
        wanted = " or ".join(str(n) for n in sorted(counts[name]))
        raise AdqlError(f"{name} takes {wanted} arguments (after the optional coordinate "
                        f"system), got {count}", *_locate(token_list, str(node.this)))


# --- tables and columns -------------------------------------------------------------------


def _identifier(name: str) -> str:
    """A metadata name as sqlglot sees the identifier: ``"size"`` -> ``size``."""
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


def _resolve_tables(tree: exp.Expression, by_name: Mapping[str, TableMeta],
                    token_list: list[sqlglot.tokens.Token]) -> set[str]:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    used: set[str] = set()
    for table in tree.find_all(exp.Table):
        if table.args.get("catalog"):
            raise AdqlError(f"unknown table {table.sql(dialect=ADQL)}",
                            *_locate(token_list, table.name))
        schema, name = table.db.lower(), table.name.lower()
        if not schema and name in ctes:
            continue
        key = f"{schema}.{name}" if schema else None
        if key is None:
            matches = [k for k in by_name if k.split(".", 1)[1] == name]
            key = matches[0] if len(matches) == 1 else None
        if key not in by_name:
            known = ", ".join(sorted(k for k in by_name if not k.startswith("tap_upload.")))
            raise AdqlError(f"unknown table {table.sql(dialect=ADQL)}; the tables are {known} "
                            "(and TAP_UPLOAD.<name> for uploads)", *_locate(token_list,
                                                                             table.name))
        schema_name, table_name = key.split(".", 1)
        table.set("db", exp.to_identifier(schema_name))
        table.set("this", exp.to_identifier(table_name))
        used.add(key)
    return used


@lru_cache(maxsize=64)
def _sqlglot_schema(tables: tuple[TableMeta, ...]) -> MappingSchema:
    """The tables as sqlglot's schema (cached: building it normalises every name)."""
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for table in tables:
        schema_name, table_name = table.name.lower().split(".", 1)
        schema.setdefault(schema_name, {})[table_name] = {
            _identifier(column.name): types.sql_type(column) for column in table.columns}
    return MappingSchema(schema, dialect=ADQL)


_POSITION = re.compile(r"\. Line: (\d+), Col: (\d+)")


_QUOTED = re.compile(r"'([^']*)'")


def _column_error(message: str) -> AdqlError:
    found = _POSITION.search(message)
    line, column = (int(found.group(1)), int(found.group(2))) if found else (None, None)
    name = _QUOTED.search(message)
    if column is not None and name:  # sqlglot gives the identifier's last column
        column = max(1, column - len(name.group(1)) + 1)
    text = _POSITION.sub("", message).strip().rstrip(".")
    text = text.replace("could not be resolved", "is not a column of the tables in FROM")
    text = text.replace("Column ", "column ")
    return AdqlError(f"{text}; see /tap/tables for the columns of each table", line, column)


def _top(tree: exp.Expression) -> int | None:
    """The query's TOP (None without), after checking it and OFFSET are whole numbers that
    SQLite can take."""
    offset = tree.args.get("offset")
    if offset is not None:
        _count(offset.expression, "OFFSET")
    limit = tree.args.get("limit")
    return None if limit is None else _count(limit.expression, "TOP")


def _count(value: exp.Expression, clause: str) -> int:
    """The number of a TOP or OFFSET clause: a whole number from 0 to 2**63 - 1."""
    if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
        raise AdqlError(f"{clause} takes a whole number, 0 or more")
    number = int(value.this)
    if number > MAX_COUNT:
        raise AdqlError(f"{clause} {number} is more than the largest count, {MAX_COUNT}")
    return number


def _rename_sources(scopes: Sequence[Scope], by_name: Mapping[str, TableMeta]) -> None:
    """Published tables -> their SQLite relations; their columns -> their SQLite names."""
    tables: list[exp.Table] = []
    for scope in scopes:
        tables += [s for s in scope.sources.values() if isinstance(s, exp.Table)]
        for column in scope.columns:
            source = scope.sources.get(column.table)
            if isinstance(source, exp.Table):
                meta = by_name.get(f"{source.db}.{source.name}".lower())
                found = meta.column(_identifier_back(column.name, meta)) if meta else None
                if found is not None and found.sql != column.name:
                    column.set("this", exp.to_identifier(found.sql))
    for table in {id(t): t for t in tables}.values():
        meta = by_name.get(f"{table.db}.{table.name}".lower())
        if meta is not None:
            table.set("db", None)
            table.set("this", exp.to_identifier(meta.sql_name))


def _identifier_back(name: str, meta: TableMeta) -> str:
    """The metadata name of a column identifier (``size`` may be stored as ``"size"``)."""
    for column in meta.columns:
        if _identifier(column.name) == name:
            return column.name
    return name


def _rewrite_functions(tree: exp.Expression) -> None:
    for node in list(tree.walk()):
        if isinstance(node, exp.Anonymous) and str(node.this).upper() in GEOMETRY:
            name = str(node.this).upper()
            if name == "COORDSYS":
                node.replace(exp.Literal.string("ICRS"))
            else:
                node.set("this", f"adql_{name.lower()}")
        elif isinstance(node, exp.Log) and node.args.get("expression") is None:
            node.replace(exp.Ln(this=node.this))  # ADQL LOG(x) is natural; SQLite's is base 10
        elif isinstance(node, exp.Contains):
            node.replace(exp.Anonymous(this="adql_contains",
                                       expressions=[node.this, node.expression]))
        elif type(node) in RENAMED:
            arguments = [a for a in (node.this, node.args.get("expression"),
                                     node.args.get("decimals")) if a is not None]
            node.replace(exp.Anonymous(this=RENAMED[type(node)], expressions=arguments))


def _contains_point(tree: exp.Expression) -> None:
    """CONTAINS(POINT(a, b), shape) -> adql_point_in(a, b, shape): tests the coordinates
    without building a point value (the upload join's inner test)."""
    for node in list(tree.find_all(exp.Anonymous)):
        first = node.expressions[0] if node.expressions else None
        if (str(node.this).lower() == "adql_contains" and isinstance(first, exp.Anonymous)
                and str(first.this).lower() == "adql_point" and len(first.expressions) == 2):
            node.set("this", "adql_point_in")
            node.set("expressions", [*first.expressions, node.expressions[1]])


def scope_of(tree: exp.Expression) -> Scope | None:
    """The root scope of a translated tree (for tests)."""
    return build_scope(tree)
