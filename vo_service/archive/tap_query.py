"""Running one translated ADQL query against the index, safely (TAP's execution side).

Each query gets its own connection that opens the index read-only (``mode=ro``), makes the
published tables as TEMP relations (the ObsCore view, TAP_SCHEMA, the query's uploads),
registers the ADQL functions, and only then installs an authorizer that allows nothing but
SELECT, reads of those relations and calls of known functions, and a progress handler that
ends the statement at its deadline or when the job is aborted. The SQL comes from the ADQL
translator (one SELECT; ``vo_service.products.adql``); this module never sees ADQL.
"""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from vo_service.archive import tap_geometry as geo
from vo_service.archive.tap_schema import (
    TAP_SCHEMA_TABLES,
    TableMeta,
    obscore_table,
    tap_schema_rows,
)

DATALINK_MIME = "application/x-votable+xml;content=datalink"
PROGRESS_STEPS = 5000  # SQLite VM steps between deadline checks
# Tables of the index the ObsCore view and the prefilter read.
INDEX_TABLES = {"images", "images_sky", "images_sky_node", "images_sky_rowid",
                "images_sky_parent"}  # the R*Tree reads its shadow tables
# SQLite's own functions an ADQL query may reach after translation.
SQLITE_FUNCTIONS = {
    "abs", "acos", "asin", "atan", "atan2", "avg", "cast", "ceil", "ceiling", "coalesce",
    "cos", "count", "degrees", "exp", "floor", "ln", "log", "log10", "lower", "max", "min",
    "mod", "pi", "pow", "power", "radians", "round", "sin", "sqrt", "sum", "tan", "upper",
    "length", "trim", "substr", "substring", "instr", "like", "json_extract", "ifnull", "iif",
    "total", "group_concat", "nullif",
}


class QueryFailed(Exception):
    """The query could not run to the end; the message says why and what to change."""


class QueryTimeout(QueryFailed):
    """The query ran past its execution duration (or its job was aborted)."""


@dataclass
class UploadTable:
    """An uploaded table ready for SQLite: metadata (columns with sql names) and rows."""

    meta: TableMeta
    rows: list[tuple[object, ...]]


@dataclass
class QueryResult:
    """Raw rows of a query (already limited) and whether more rows existed."""

    rows: list[tuple[object, ...]]
    overflow: bool
    elapsed: float = 0.0


@dataclass
class _Deadline:
    ends: float
    stop: Callable[[], bool] | None = None
    expired: bool = False

    def __call__(self) -> int:
        if time.monotonic() > self.ends or (self.stop is not None and self.stop()):
            self.expired = True
            return 1
        return 0


@dataclass
class _FunctionErrors:
    """The message of the last ADQL function that refused its arguments (SQLite only says
    "user-defined function raised exception")."""

    messages: list[str] = field(default_factory=list)


def _sql_function(errors: _FunctionErrors, function: Callable[..., object]
                  ) -> Callable[..., object]:
    def call(*args: object) -> object:
        try:
            return function(*args)
        except (geo.GeometryError, ValueError, TypeError, OverflowError) as exc:
            errors.messages.append(str(exc))
            raise
    return call


def _shape(value: object) -> geo.Shape | None:
    return None if value is None else geo.decode(str(value))


def _predicate(test: Callable[[geo.Shape, geo.Shape], bool]) -> Callable[..., int | None]:
    def call(first: object, second: object) -> int | None:
        a, b = _shape(first), _shape(second)
        return None if a is None or b is None else int(test(a, b))
    return call


def _point_in(ra: object, dec: object, shape: object) -> int | None:
    """CONTAINS(POINT(ra, dec), shape) without making the point (the upload join's test)."""
    if ra is None or dec is None or shape is None:
        return None
    outer = geo.decode(str(shape))
    if isinstance(outer, geo.Polygon):
        return int(outer.contains_vector(geo.xyz(float(ra), float(dec))))  # type: ignore[arg-type]
    return int(geo.contains(geo.make_point(float(ra), float(dec)), outer))  # type: ignore[arg-type]


def _point(*args: object) -> str | None:
    if any(a is None for a in args):
        return None
    ra, dec = (float(a) for a in args)  # type: ignore[arg-type]
    return geo.encode(geo.make_point(ra, dec))


def _circle(*args: object) -> str | None:
    if any(a is None for a in args):
        return None
    if len(args) == 2:
        centre = geo.decode(str(args[0]))
        if not isinstance(centre, geo.Point):
            raise geo.GeometryError("CIRCLE(centre, radius) needs a POINT as its centre")
        return geo.encode(geo.make_circle(centre.ra, centre.dec, float(args[1])))
    ra, dec, radius = (float(a) for a in args)  # type: ignore[arg-type]
    return geo.encode(geo.make_circle(ra, dec, radius))


def _polygon(*args: object) -> str | None:
    if any(a is None for a in args):
        return None
    if all(isinstance(a, str) for a in args):
        points = [geo.decode(str(a)) for a in args]
        if not all(isinstance(p, geo.Point) for p in points):
            raise geo.GeometryError("POLYGON takes numbers or POINTs as vertices")
        vertices = [(p.ra, p.dec) for p in points]  # type: ignore[union-attr]
    else:
        numbers = [float(a) for a in args]  # type: ignore[arg-type]
        if len(numbers) % 2:
            raise geo.GeometryError("POLYGON needs pairs of coordinates")
        vertices = list(zip(numbers[::2], numbers[1::2], strict=True))
    return geo.encode(geo.make_polygon(vertices))


def _box(*args: object) -> str | None:
    if any(a is None for a in args):
        return None
    if len(args) == 3:
        centre = geo.decode(str(args[0]))
        if not isinstance(centre, geo.Point):
            raise geo.GeometryError("BOX(centre, width, height) needs a POINT as its centre")
        ra, dec, width, height = centre.ra, centre.dec, float(args[1]), float(args[2])
    else:
        ra, dec, width, height = (float(a) for a in args)  # type: ignore[arg-type]
    return geo.encode(geo.make_box(ra, dec, width, height))


def _distance(*args: object) -> float | None:
    if any(a is None for a in args):
        return None
    if len(args) == 4:
        ra1, dec1, ra2, dec2 = (float(a) for a in args)  # type: ignore[arg-type]
        return geo.distance(geo.make_point(ra1, dec1), geo.make_point(ra2, dec2))
    return geo.distance(geo.decode(str(args[0])), geo.decode(str(args[1])))


def _coord(index: int) -> Callable[[object], float | None]:
    def call(value: object) -> float | None:
        shape = _shape(value)
        if shape is None:
            return None
        if not isinstance(shape, geo.Point):
            raise geo.GeometryError(f"COORD{index + 1} takes a POINT")
        return (shape.ra, shape.dec)[index]
    return call


def _area(value: object) -> float | None:
    shape = _shape(value)
    return None if shape is None else geo.area(shape)


def _centroid(value: object) -> str | None:
    shape = _shape(value)
    return None if shape is None else geo.encode(geo.centroid(shape))


def _truncate(value: object, digits: object = 0) -> float | None:
    if value is None or digits is None:
        return None
    scale = 10.0 ** int(digits)  # type: ignore[call-overload]
    return math.trunc(float(value) * scale) / scale  # type: ignore[arg-type]


def _rand(seed: object = None) -> float:
    return random.Random(seed).random() if seed is not None else random.random()


def _cot(value: object) -> float | None:
    return None if value is None else 1.0 / math.tan(float(value))  # type: ignore[arg-type]


def links_url_function(base_url: str) -> Callable[[object], str | None]:
    """``access_url`` of a publisher DID: its DataLink document (as SIA's access_url).

    Cached: a join returns the same image for many targets, and quoting is per character."""
    @lru_cache(maxsize=65536)
    def call(did: object) -> str | None:
        return None if did is None else f"{base_url}/links?ID={quote(str(did), safe='')}"
    return call


ADQL_FUNCTIONS: dict[str, tuple[int, Callable[..., object]]] = {
    "adql_point": (-1, _point),
    "adql_circle": (-1, _circle),
    "adql_polygon": (-1, _polygon),
    "adql_box": (-1, _box),
    "adql_contains": (2, _predicate(geo.contains)),
    "adql_point_in": (3, _point_in),
    "adql_intersects": (2, _predicate(geo.intersects)),
    "adql_distance": (-1, _distance),
    "adql_coord1": (1, _coord(0)),
    "adql_coord2": (1, _coord(1)),
    "adql_area": (1, _area),
    "adql_centroid": (1, _centroid),
    "adql_truncate": (-1, _truncate),
    "adql_cot": (1, _cot),
}
NONDETERMINISTIC = {"adql_rand": (-1, _rand)}


def _obscore_view(base_url: str) -> str:
    """The ObsCore view over ``images``: access_url -> DataLink, every other column as is.

    ``tap_rowid`` is the images rowid for the R*Tree prefilter; the translator never lets a
    query name it (it is not in TAP_SCHEMA)."""
    columns = []
    for column in obscore_table().columns:
        if column.name == "access_url":
            columns.append("tap_links_url(obs_publisher_did) AS access_url")
        elif column.name == "access_format":
            columns.append(f"'{DATALINK_MIME}' AS access_format")
        else:
            columns.append(f"main.images.{column.name} AS {column.name}")
    return (f"CREATE TEMP VIEW tap_obscore AS SELECT {', '.join(columns)}, "
            "main.images.rowid AS tap_rowid FROM main.images")


def _create_table(connection: sqlite3.Connection, meta: TableMeta,
                  rows: Sequence[Sequence[object]]) -> None:
    names = [f'"{c.sql}"' for c in meta.columns]
    connection.execute(f"CREATE TEMP TABLE {meta.sql_name} ({', '.join(names)})")
    if rows:
        marks = ", ".join("?" * len(names))
        connection.executemany(f"INSERT INTO {meta.sql_name} VALUES ({marks})", rows)


class _Authorizer:
    """Allows SELECT, reads of the published relations and calls of known functions."""

    def __init__(self, readable: set[str], functions: set[str]) -> None:
        self.readable = readable
        self.functions = functions

    def __call__(self, action: int, arg1: str | None, arg2: str | None, database: str | None,
                 source: str | None) -> int:
        if action == sqlite3.SQLITE_SELECT or action == sqlite3.SQLITE_RECURSIVE:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            return sqlite3.SQLITE_OK if (arg1 or "").lower() in self.readable \
                else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            return sqlite3.SQLITE_OK if (arg2 or "").lower() in self.functions \
                else sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_DENY


@dataclass
class QuerySession:
    """A prepared read-only connection for one query (see the module docstring)."""

    connection: sqlite3.Connection
    errors: _FunctionErrors
    deadline: _Deadline

    def close(self) -> None:
        self.connection.close()


def open_session(index_path: Path, base_url: str, uploads: Sequence[UploadTable] = (),
                 *, seconds: float = 600.0, stop: Callable[[], bool] | None = None
                 ) -> QuerySession:
    """A connection on the index with the published tables, uploads and ADQL functions."""
    connection = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=30,
                                 check_same_thread=False)
    errors = _FunctionErrors()
    try:
        functions = set(SQLITE_FUNCTIONS)
        for name, (arity, function) in ADQL_FUNCTIONS.items():
            connection.create_function(name, arity, _sql_function(errors, function),
                                       deterministic=True)
            functions.add(name)
        for name, (arity, function) in NONDETERMINISTIC.items():
            connection.create_function(name, arity, _sql_function(errors, function))
            functions.add(name)
        connection.create_function("tap_links_url", 1, links_url_function(base_url),
                                   deterministic=True)
        functions.add("tap_links_url")
        # ADQL LIKE is case-sensitive (ILIKE is the insensitive one).
        connection.execute("PRAGMA case_sensitive_like = ON")
        connection.execute(_obscore_view(base_url))
        schema_rows = tap_schema_rows()
        readable = set(INDEX_TABLES) | {"tap_obscore"}
        for meta in TAP_SCHEMA_TABLES:
            _create_table(connection, meta, schema_rows.rows[meta.name])
            readable.add(meta.sql_name)
        for upload in uploads:
            _create_table(connection, upload.meta, upload.rows)
            readable.add(upload.meta.sql_name)
        connection.commit()
        # The R*Tree prepares its own statements (on sqlite_master and its shadow tables)
        # when first used: let it do so before the authorizer would refuse them.
        connection.execute("SELECT id FROM images_sky WHERE id = -1").fetchall()
        deadline = _Deadline(time.monotonic() + seconds, stop)
        connection.set_authorizer(_Authorizer(readable, functions))
        connection.set_progress_handler(deadline, PROGRESS_STEPS)
    except BaseException:
        connection.close()
        raise
    return QuerySession(connection, errors, deadline)


def execute(session: QuerySession, sql: str, limit: int | None) -> QueryResult:
    """Run ``sql`` (one SELECT) and fetch at most ``limit`` rows (+1 to see an overflow)."""
    started = time.monotonic()
    connection = session.connection
    try:
        cursor = connection.execute(sql)
        if limit is None:
            rows = cursor.fetchall()
            overflow = False
        else:
            rows = cursor.fetchmany(limit + 1)
            overflow = len(rows) > limit
            rows = rows[:limit]
    except sqlite3.OperationalError as exc:
        if session.deadline.expired:
            raise QueryTimeout("the query ran longer than its execution duration (or was "
                               "aborted); narrow it, e.g. with a spatial constraint that "
                               "uses the index (CONTAINS/INTERSECTS/DISTANCE)") from exc
        raise QueryFailed(_explain(session, exc)) from exc
    except (sqlite3.DatabaseError, OverflowError) as exc:
        raise QueryFailed(_explain(session, exc)) from exc
    return QueryResult(rows, overflow, time.monotonic() - started)


def _explain(session: QuerySession, exc: Exception) -> str:
    if session.errors.messages:
        return session.errors.messages[-1]
    text = str(exc)
    if "not authorized" in text:
        return "the query tries to use something other than the published tables"
    return f"the database could not run the query: {text}"
