"""Index constraints added next to ADQL geometry predicates, so that a cone on a large table
does not test every row with the exact (Python) predicate.

The exact predicate always stays; what is added only narrows the candidates:

- a predicate between ``ivoa.obscore.s_region`` and a constant shape, or a point of another
  table (the upload join), gets ``tap_rowid IN (R*Tree lookup of footprint boxes)``;
- one between ``POINT(s_ra, s_dec)`` and a constant shape gets an ``s_dec`` range (indexed)
  and an ``s_ra`` range with RA wrap-around; ``DISTANCE(POINT(s_ra, s_dec), p) < r`` for a
  point of another table gets the ``s_dec`` range.

Boxes come from :func:`vo_service.archive.tap_geometry.sky_box` (RA wraps through 0, a pole
inside a shape opens the whole RA circle).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from vo_service.archive import tap_geometry as geo

OBSCORE_RELATION = "tap_obscore"
FULL_CIRCLE = 360.0


def add_index_constraints(scope: Scope) -> None:
    """AND index constraints into the WHERE and JOIN ... ON conditions of ``scope``."""
    select = scope.expression
    if not isinstance(select, exp.Select):
        return
    obscore_aliases = {alias for alias, source in scope.sources.items()
                       if isinstance(source, exp.Table) and source.name == OBSCORE_RELATION}
    if not obscore_aliases:
        return
    where = select.args.get("where")
    if where is not None:
        extra = _constraints(where.this, obscore_aliases)
        if extra:  # first, so that SQLite tests them before the exact (Python) predicate
            where.set("this", exp.and_(*extra, where.this))
    for join in select.args.get("joins") or []:
        on = join.args.get("on")
        if on is not None:
            extra = _constraints(on, obscore_aliases)
            if extra:
                join.set("on", exp.and_(*extra, on))


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _constraints(condition: exp.Expression, aliases: set[str]) -> list[exp.Expression]:
    added: list[exp.Expression] = []
    for term in _conjuncts(condition):
        for text in _for_term(term, aliases):
            added.append(sqlglot.parse_one(text, read="sqlite"))
    return added


def _function(node: exp.Expression, name: str) -> exp.Anonymous | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Anonymous) and str(node.this).lower() == name:
        return node
    return None


def _is_one(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string and node.this in ("1", "1.0")


def _for_term(term: exp.Expression, aliases: set[str]) -> list[str]:
    if isinstance(term, exp.EQ):
        for call, one in ((term.this, term.expression), (term.expression, term.this)):
            if not _is_one(one):
                continue
            for name in ("adql_contains", "adql_intersects"):
                function = _function(call, name)
                if function is not None and len(function.expressions) == 2:
                    return _for_predicate(*function.expressions, aliases)
    bound = _distance_bound(term)
    if bound is not None:
        return _for_distance(*bound, aliases)
    return []


def _for_predicate(first: exp.Expression, second: exp.Expression, aliases: set[str]
                   ) -> list[str]:
    for mine, other in ((first, second), (second, first)):
        region = _obscore_column(mine, aliases, "s_region")
        if region is not None:
            constant = _constant_shape(other)
            if constant is not None:
                return [_rtree_for_box(region, geo.sky_box(constant))]
            point = _column_point(other, aliases)
            if point is not None:
                return [_rtree_for_point(region, *point)]
        centre = _obscore_point(mine, aliases)
        if centre is not None:
            constant = _constant_shape(other)
            if constant is not None:
                return [_centre_box(centre, geo.sky_box(constant))]
    return []


def _distance_bound(term: exp.Expression) -> tuple[exp.Anonymous, float] | None:
    """``DISTANCE(...) < r`` (or ``<=``, or mirrored) with a constant ``r``."""
    pairs = []
    if isinstance(term, exp.LT | exp.LTE):
        pairs.append((term.this, term.expression))
    if isinstance(term, exp.GT | exp.GTE):
        pairs.append((term.expression, term.this))
    for call, limit in pairs:
        function = _function(call, "adql_distance")
        radius = _number(limit)
        if function is not None and radius is not None:
            return function, radius
    return None


def _for_distance(function: exp.Anonymous, radius: float, aliases: set[str]) -> list[str]:
    arguments = function.expressions
    if len(arguments) == 4:
        points = [exp.Anonymous(this="adql_point", expressions=arguments[:2]),
                  exp.Anonymous(this="adql_point", expressions=arguments[2:])]
    else:
        points = list(arguments)
    if radius < 0 or radius > 180:
        return []
    for mine, other in ((points[0], points[1]), (points[1], points[0])):
        centre = _obscore_point(mine, aliases)
        if centre is None:
            continue
        constant = _constant_shape(other)
        if isinstance(constant, geo.Point):
            circle = geo.make_circle(constant.ra, constant.dec, radius)
            return [_centre_box(centre, geo.sky_box(circle))]
        point = _column_point(other, aliases)
        if point is not None:
            dec = centre[1]
            pad = radius + 1e-7
            return [f"{dec} BETWEEN {point[1]} - {pad!r} AND {point[1]} + {pad!r}"]
    return []


def _obscore_column(node: exp.Expression, aliases: set[str], name: str) -> str | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Column) and node.table in aliases and node.name == name:
        return f'"{node.table}"'
    return None


def _obscore_point(node: exp.Expression, aliases: set[str]) -> tuple[str, str] | None:
    function = _function(node, "adql_point")
    if function is None or len(function.expressions) != 2:
        return None
    ra, dec = function.expressions
    if (isinstance(ra, exp.Column) and isinstance(dec, exp.Column) and ra.table in aliases
            and ra.table == dec.table and ra.name == "s_ra" and dec.name == "s_dec"):
        return f'"{ra.table}"."s_ra"', f'"{dec.table}"."s_dec"'
    return None


def _column_point(node: exp.Expression, aliases: set[str]) -> tuple[str, str] | None:
    """SQL of (ra, dec) of ``POINT(col, col)`` over a table other than ObsCore."""
    function = _function(node, "adql_point")
    if function is None or len(function.expressions) != 2:
        return None
    ra, dec = function.expressions
    if all(isinstance(c, exp.Column) and c.table and c.table not in aliases for c in (ra, dec)):
        return (ra.sql(dialect="sqlite", identify=True), dec.sql(dialect="sqlite",
                                                                  identify=True))
    return None


def _number(node: exp.Expression) -> float | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Neg):
        inner = _number(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None


def _constant_shape(node: exp.Expression) -> geo.Shape | None:
    """The shape of a geometry constructor whose arguments are all numbers, else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, exp.Anonymous):
        return None
    name = str(node.this).lower()
    arguments = node.expressions
    try:
        if name == "adql_point" and len(arguments) == 2:
            values = [_number(a) for a in arguments]
            return None if None in values else geo.make_point(*values)  # type: ignore[arg-type]
        if name == "adql_circle":
            if len(arguments) == 2:
                centre, radius = _constant_shape(arguments[0]), _number(arguments[1])
                if isinstance(centre, geo.Point) and radius is not None:
                    return geo.make_circle(centre.ra, centre.dec, radius)
                return None
            values = [_number(a) for a in arguments]
            return None if None in values else geo.make_circle(*values)  # type: ignore[arg-type]
        if name == "adql_polygon":
            values = [_number(a) for a in arguments]
            if None not in values and len(values) % 2 == 0:
                return geo.make_polygon(list(zip(values[::2], values[1::2], strict=True)))
            shapes = [_constant_shape(a) for a in arguments]
            if all(isinstance(s, geo.Point) for s in shapes):
                return geo.make_polygon([(s.ra, s.dec) for s in shapes])  # type: ignore[union-attr]
            return None
        if name == "adql_box" and len(arguments) == 4:
            values = [_number(a) for a in arguments]
            return None if None in values else geo.make_box(*values)  # type: ignore[arg-type]
    except geo.GeometryError:
        return None  # the exact predicate reports it
    return None


def _rtree_for_box(alias: str, box: tuple[float, float, float, float]) -> str:
    ra_lo, ra_hi, dec_lo, dec_hi = box
    selects = []
    shifts = [0.0, FULL_CIRCLE] + ([-FULL_CIRCLE] if ra_hi >= FULL_CIRCLE else [])
    for shift in shifts:
        selects.append(f"SELECT id FROM images_sky WHERE dec_hi >= {dec_lo!r} AND dec_lo <= "
                       f"{dec_hi!r} AND ra_hi >= {ra_lo + shift!r} AND ra_lo <= "
                       f"{ra_hi + shift!r}")
    return f"{alias}.tap_rowid IN ({' UNION ALL '.join(selects)})"


def _rtree_for_point(alias: str, ra: str, dec: str) -> str:
    selects = [f"SELECT id FROM images_sky WHERE ra_lo <= {ra}{shift} AND ra_hi >= "
               f"{ra}{shift} AND dec_lo <= {dec} AND dec_hi >= {dec}"
               for shift in ("", " + 360.0")]
    return f"{alias}.tap_rowid IN ({' UNION ALL '.join(selects)})"


def _centre_box(centre: tuple[str, str], box: tuple[float, float, float, float]) -> str:
    ra, dec = centre
    ra_lo, ra_hi, dec_lo, dec_hi = box
    dec_part = f"{dec} BETWEEN {dec_lo!r} AND {dec_hi!r}"
    if ra_hi - ra_lo >= FULL_CIRCLE:
        return dec_part
    ranges = [f"{ra} BETWEEN {ra_lo!r} AND {ra_hi!r}"]
    if ra_hi > FULL_CIRCLE:
        ranges.append(f"{ra} BETWEEN 0.0 AND {ra_hi - FULL_CIRCLE!r}")
    return f"{dec_part} AND ({' OR '.join(ranges)})"

