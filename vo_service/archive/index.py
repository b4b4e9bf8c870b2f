"""The archive index: served image HDUs of the data roots in SQLite (WAL), kept incrementally.

One row per served image HDU (table ``images``, ObsCore-shaped), one row per indexed file
(table ``files``: size and mtime decide whether a file is read again). Readers in other
processes may query while an indexer runs: WAL mode, and commits in small batches.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils
from numpy.typing import ArrayLike, NDArray

from vo_service.archive import regions, tap_geometry
from vo_service.archive.lookup import SpatialIndex
from vo_service.archive.mapping import ArchiveMapping, load_mapping
from vo_service.archive.product_coverage import adopt_tile_footprints
from vo_service.archive.records import Combination, ImageRecord, column_types
from vo_service.archive.scan import FileStat, ScanError, read_records, walk_fits
from vo_service.archive.search import where_clause
from vo_service.shapes import Circle, Polygon, Range

log = logging.getLogger(__name__)

DEFAULT_AUTHORITY = "vo-service.example"
SCHEMA = "1:" + ",".join(column_types())  # changes whenever ImageRecord gains a field
COMMIT_EVERY = 25  # files per transaction while indexing (readers see progress)
FILTER_COLUMNS = {"collection": "obs_collection", "instrument": "instrument_name",
                  "band": "band", "product_type": "product_type"}


@dataclass
class IndexReport:
    """What one indexing run did, per file."""

    added: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    images: int = 0

    def summary(self) -> str:
        """One line of counts, then one line per failed file with its reason."""
        lines = [
            f"index: {self.images} images; files: {len(self.added)} added, "
            f"{len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed, {len(self.failed)} failed"
        ]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


class ArchiveIndex:
    """The image index in one SQLite file; thread-safe, one connection per instance."""

    def __init__(self, db_path: Path | str) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(str(self.db_path), timeout=60, check_same_thread=False)
        # The sky-box triggers call it; a REPLACE fires the delete trigger of the old row.
        connection.create_function("footprint_box", 1, tap_geometry.footprint_box,
                                   deterministic=True)
        connection.execute("PRAGMA recursive_triggers = ON")
        self.db = sqlite_utils.Database(connection)
        self.db.enable_wal()
        self._lock = threading.RLock()
        self._spatial: tuple[int, SpatialIndex, dict[str, NDArray[Any]]] | None = None
        self._create_tables()

    def close(self) -> None:
        """Close the database connection."""
        self.db.conn.close()

    # --- schema -----------------------------------------------------------------------
    def _create_tables(self) -> None:
        with self._lock, self.db.atomic():
            self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            if self._meta("schema") != SCHEMA:
                # An index written by another version: start afresh (the next update
                # re-reads every file) rather than fail on missing columns.
                for table in ("images", "files", "images_sky"):
                    self.db[table].drop(ignore=True)
                self._set_meta("schema", SCHEMA)
                self._set_meta("settings", "")
            self.db["images"].create(column_types(), pk="obs_publisher_did", if_not_exists=True)
            self.db["files"].create({"path": str, "root": str, "size": int, "mtime": float,
                                     "images": int}, pk="path", if_not_exists=True)
            for columns in (["path"], ["obs_collection"], ["band"], ["product_type"],
                            ["tile"]):
                self.db["images"].create_index(columns, if_not_exists=True)
            self.db.execute("CREATE INDEX IF NOT EXISTS images_did_nocase "
                            "ON images (lower(obs_publisher_did))")
            # TAP cones on image centres: the s_dec range from the index, the s_ra range
            # tested on index entries (SQLite defers the row lookup) -> few rows read
            self.db.execute("CREATE INDEX IF NOT EXISTS images_s_dec_ra ON images (s_dec, s_ra)")
            # covers census queries (TAP GROUP BY instrument_name, band; facet counts)
            self.db.execute("CREATE INDEX IF NOT EXISTS images_instrument_band "
                            "ON images (instrument_name, band)")
            self._create_sky_boxes()

    def _create_sky_boxes(self) -> None:
        """``images_sky``: an R*Tree of footprint boxes (id = images.rowid) kept by triggers,
        so TAP's geometry predicates on s_region look up candidates instead of scanning."""
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'images_sky'"
                                 ).fetchone()
        if exists:
            return
        self.db.execute("CREATE VIRTUAL TABLE images_sky USING rtree("
                        "id, ra_lo, ra_hi, dec_lo, dec_hi)")
        insert = ("INSERT OR REPLACE INTO images_sky SELECT {row}.rowid, "
                  "json_extract(box, '$[0]'), json_extract(box, '$[1]'), "
                  "json_extract(box, '$[2]'), json_extract(box, '$[3]') "
                  "FROM (SELECT footprint_box({row}.s_region) AS box) WHERE box IS NOT NULL")
        self.db.execute("CREATE TRIGGER images_sky_insert AFTER INSERT ON images BEGIN "
                        + insert.format(row="new") + "; END")
        self.db.execute("CREATE TRIGGER images_sky_update AFTER UPDATE OF s_region ON images "
                        "BEGIN DELETE FROM images_sky WHERE id = old.rowid; "
                        + insert.format(row="new") + "; END")
        self.db.execute("CREATE TRIGGER images_sky_delete AFTER DELETE ON images BEGIN "
                        "DELETE FROM images_sky WHERE id = old.rowid; END")
        for rowid, region in self.db.execute("SELECT rowid, s_region FROM images "
                                             "WHERE s_region IS NOT NULL").fetchall():
            box = tap_geometry.footprint_box(region)
            self.db.execute("INSERT INTO images_sky VALUES (?, ?, ?, ?, ?)",
                            [rowid, *json.loads(box or "[0, 360, -90, 90]")])

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])

    def generation(self) -> int:
        """A counter bumped by every change; lets readers in any process notice updates."""
        with self._lock:
            return int(self._meta("generation") or 0)

    def _bump(self) -> None:
        self._set_meta("generation", str(int(self._meta("generation") or 0) + 1))

    # --- writing ----------------------------------------------------------------------
    def update(self, roots: Iterable[Path | str], mapping: ArchiveMapping | None = None, *,
               authority: str = DEFAULT_AUTHORITY) -> IndexReport:
        """Bring the index in line with the FITS files under ``roots``.

        Unchanged files (same size and mtime, same mapping and authority) are skipped,
        changed ones re-read, vanished ones (or ones under roots no longer listed) removed.
        Unreadable files are reported in ``failed`` and skipped. A listed root that is not
        a directory (an unmounted disk) is reported and its indexed files are kept.
        """
        mapping = mapping or load_mapping()
        report = IndexReport()
        settings_key = f"{mapping.fingerprint}|{authority}"
        with self._lock:
            force = self._meta("settings") != settings_key
            known = {row["path"]: row for row in self.db["files"].rows}
            seen: set[str] = set()
            pending = 0
            self.db.conn.execute("BEGIN")
            try:
                for root in roots:
                    root = Path(root).expanduser().absolute()
                    if not root.is_dir():
                        # An unmounted disk must not empty the index: keep what it held.
                        kept = [key for key, row in known.items() if row["root"] == str(root)]
                        seen.update(kept)
                        report.failed.append((root, "data root is not a directory (its "
                                                    f"{len(kept)} indexed files are kept)"))
                        continue
                    for path in walk_fits(root):
                        key = str(path)
                        if key in seen:
                            continue
                        seen.add(key)
                        pending += self._index_file(path, root, mapping, authority,
                                                    known.get(key), force, report)
                        if pending >= COMMIT_EVERY:
                            self._bump()
                            self.db.conn.execute("COMMIT")
                            self.db.conn.execute("BEGIN")
                            pending = 0
                for key in sorted(set(known) - seen):
                    self._forget(key)
                    report.removed.append(Path(key))
                adopt_tile_footprints(self.db, report.failed)  # PSF and catalog products
                self._set_meta("settings", settings_key)
                self._bump()
                self.db.conn.execute("COMMIT")
            except BaseException:
                if self.db.conn.in_transaction:  # SQLite already rolled back a full disk
                    self.db.conn.execute("ROLLBACK")
                raise
            report.images = self.db["images"].count
        return report

    def _index_file(self, path: Path, root: Path, mapping: ArchiveMapping, authority: str,
                    known: dict[str, Any] | None, force: bool, report: IndexReport) -> int:
        """Index one file; returns 1 when the database changed."""
        try:
            info = path.stat()
        except OSError as exc:
            report.failed.append((path, f"cannot stat: {exc.strerror}"))
            return 0
        stat = FileStat(info.st_size, info.st_mtime)
        if (known and not force and known["size"] == stat.size
                and known["mtime"] == stat.mtime):
            report.unchanged.append(path)
            return 0
        try:
            records, problems = read_records(path, root, mapping, authority, stat)
        except ScanError as exc:
            report.failed.append((path, str(exc)))
            if known:
                self._forget(str(path))
            return 1 if known else 0
        report.failed.extend((path, problem) for problem in problems)
        self.db.execute("DELETE FROM images WHERE path = ?", [str(path)])
        clashes = []
        for record in records:
            owner = self._owner_of(record.obs_publisher_did)
            if owner not in (None, str(path)):
                clashes.append(record)
                report.failed.append((path, f"HDU {record.hdu}: ID {record.obs_publisher_did} "
                                            f"is already used by {owner}"))
        rows = [self._row(r) for r in records if r not in clashes]
        self.db["images"].insert_all(rows, replace=True)
        self.db["files"].insert({"path": str(path), "root": str(root), "size": stat.size,
                                 "mtime": stat.mtime, "images": len(rows)}, replace=True)
        (report.updated if known else report.added).append(path)
        return 1

    def _owner_of(self, did: str) -> str | None:
        row = self.db.execute("SELECT path FROM images WHERE obs_publisher_did = ?",
                              [did]).fetchone()
        return None if row is None else row[0]

    def _forget(self, path: str) -> None:
        self.db.execute("DELETE FROM images WHERE path = ?", [path])
        self.db.execute("DELETE FROM files WHERE path = ?", [path])

    @staticmethod
    def _row(record: ImageRecord) -> dict[str, Any]:
        return record.to_row()

    def add_records(self, records: Iterable[ImageRecord]) -> None:
        """Insert records directly (synthetic archives, benchmarks); replaces equal IDs."""
        with self._lock, self.db.atomic():
            self.db["images"].insert_all((r.to_row() for r in records), replace=True,
                                         batch_size=1000)
            self._bump()

    # --- reading ----------------------------------------------------------------------
    def _select(self, where: str = "1", params: Sequence[object] = (),
                limit: int | None = None) -> list[ImageRecord]:
        sql = f"SELECT * FROM images WHERE {where} ORDER BY obs_publisher_did"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            cursor = self.db.execute(sql, list(params))
            names = [d[0] for d in cursor.description]
            return [ImageRecord.from_row(dict(zip(names, row, strict=True))) for row in cursor]

    def get(self, did: str) -> ImageRecord | None:
        """The record with this publisher DID (exact first, then case-insensitively)."""
        found = self._select("obs_publisher_did = ?", [did]) or self._select(
            "lower(obs_publisher_did) = ?", [did.lower()])
        return found[0] if found else None

    def records(self, **equal_filters: object) -> list[ImageRecord]:
        """Records whose columns equal the given values (None means NULL), sorted by ID.

        Keys are ImageRecord field names; ``collection``, ``instrument`` are accepted for
        obs_collection, instrument_name. A list or tuple value means "any of".
        """
        columns = set(column_types())
        clauses, params = [], []
        for name, value in equal_filters.items():
            column = FILTER_COLUMNS.get(name, name)
            if column not in columns:
                raise ValueError(f"unknown record field {name!r}")
            if value is None:
                clauses.append(f"{column} IS NULL")
            elif isinstance(value, list | tuple | set | frozenset):
                clauses.append(f"{column} IN ({', '.join('?' * len(value))})")
                params.extend(str(v) if isinstance(v, Path) else v for v in value)
            else:
                clauses.append(f"{column} = ?")
                params.append(str(value) if isinstance(value, Path) else value)
        return self._select(" AND ".join(clauses) or "1", params)

    def siblings(self, record: ImageRecord) -> list[ImageRecord]:
        """Other products of the same observation: same collection, tile and band (and epoch
        when known); for records without a tile, the other served HDUs of the same file."""
        if record.tile is None:
            found = self._select("path = ?", [str(record.path)])
        else:
            found = self._select(
                "obs_collection = ? AND tile = ? AND band IS ? AND "
                "(t_min IS NULL OR ? IS NULL OR abs(t_min - ?) < 1e-6)",
                [record.obs_collection, record.tile, record.band, record.t_min, record.t_min])
        return [r for r in found if r.obs_publisher_did != record.obs_publisher_did]

    def facets(self) -> dict[str, list[str]]:
        """Distinct values (sorted) of: collections, instruments, facilities, bands,
        product_types, dataproduct_types and pol_states (single states such as ``I``)."""
        out: dict[str, list[str]] = {}
        for name, column in (("collections", "obs_collection"),
                             ("instruments", "instrument_name"),
                             ("facilities", "facility_name"), ("bands", "band"),
                             ("product_types", "product_type"),
                             ("dataproduct_types", "dataproduct_type"),
                             ("pol_states", "pol_states")):
            with self._lock:
                rows = self.db.execute(f"SELECT DISTINCT {column} FROM images "
                                       f"WHERE {column} IS NOT NULL ORDER BY {column}")
                out[name] = [row[0] for row in rows]
        # pol_states are lists like /I/Q/U/: offer the single states.
        out["pol_states"] = sorted({state for states in out["pol_states"]
                                    for state in states.split("/") if state})
        return out

    def facet_counts(self) -> dict[str, list[tuple[str, int]]]:
        """Like :meth:`facets`, with the number of image HDUs per value (one SQL query each)."""
        out: dict[str, list[tuple[str, int]]] = {}
        for name, column in (("collections", "obs_collection"),
                             ("instruments", "instrument_name"),
                             ("facilities", "facility_name"), ("bands", "band"),
                             ("product_types", "product_type"),
                             ("dataproduct_types", "dataproduct_type")):
            with self._lock:
                rows = self.db.execute(f"SELECT {column}, count(*) FROM images WHERE {column} "
                                       f"IS NOT NULL GROUP BY {column} ORDER BY {column}")
                out[name] = [(row[0], int(row[1])) for row in rows]
        return out

    def combinations(self) -> list[Combination]:
        """Every (collection, instrument, band, product type) with its image count and the
        shortest ``em_min`` of its images (one grouped query): what the web page offers."""
        sql = ("SELECT obs_collection, instrument_name, band, product_type, count(*), "
               "min(em_min) FROM images WHERE instrument_name IS NOT NULL AND band IS NOT NULL "
               "AND product_type IS NOT NULL GROUP BY 1, 2, 3, 4")
        with self._lock:
            rows = list(self.db.execute(sql).fetchall())
        return [Combination(row[0] or "", row[1], row[2], row[3], int(row[4]), row[5])
                for row in rows]

    def count(self) -> int:
        """Number of indexed image HDUs."""
        with self._lock:
            return self.db["images"].count

    # --- spatial ----------------------------------------------------------------------
    def spatial_index(self) -> tuple[SpatialIndex, dict[str, NDArray[Any]]]:
        """The in-memory footprint index and per-record filter columns (rebuilt on change).

        Records are built from their rows only when asked for (``spatial.records[i]``).
        """
        with self._lock:
            generation = self.generation()
            if self._spatial is None or self._spatial[0] != generation:
                cursor = self.db.execute("SELECT * FROM images ORDER BY obs_publisher_did")
                names = [d[0] for d in cursor.description]
                rows = cursor.fetchall()
                position = {name: k for k, name in enumerate(names)}
                region_at, wide_at = position["s_region"], position["wide"]
                footprints = [None if row[wide_at] or row[region_at] is None
                              else json.loads(row[region_at]) for row in rows]
                columns = {name: np.array([row[position[column]] for row in rows], dtype=object)
                           for name, column in FILTER_COLUMNS.items()}
                records = LazyRecords(names, rows)
                self._spatial = (generation, SpatialIndex(records, footprints), columns)
            return self._spatial[1], self._spatial[2]

    def lookup_arrays(
        self, ra: ArrayLike, dec: ArrayLike, *, collection: str | Sequence[str] | None = None,
        instrument: str | Sequence[str] | None = None, band: str | Sequence[str] | None = None,
        product_type: str | Sequence[str] | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], Sequence[ImageRecord]]:
        """Like :meth:`lookup`, as arrays: (position index, record index, records)."""
        spatial, columns = self.spatial_index()
        selected = np.ones(len(spatial), dtype=bool)
        for name, wanted in (("collection", collection), ("instrument", instrument),
                             ("band", band), ("product_type", product_type)):
            if wanted is None:
                continue
            wanted = [wanted] if isinstance(wanted, str) else list(wanted)
            selected &= np.isin(columns[name], np.array(wanted, dtype=object))
        points, found = spatial.contains(ra, dec, selected)
        return points, found, spatial.records

    def lookup(
        self, ra: ArrayLike, dec: ArrayLike, *, collection: str | Sequence[str] | None = None,
        instrument: str | Sequence[str] | None = None, band: str | Sequence[str] | None = None,
        product_type: str | Sequence[str] | None = None,
    ) -> list[tuple[int, ImageRecord]]:
        """Which images contain each position, for all positions at once.

        ``ra``, ``dec``: ICRS degrees (arrays of equal length, or scalars). Filters take one
        value or a list of accepted values. Returns (position index, record) pairs sorted by
        position index, then publisher DID. Positions outside every image do not appear.
        """
        points, found, records = self.lookup_arrays(
            ra, dec, collection=collection, instrument=instrument, band=band,
            product_type=product_type)
        return [(int(p), records[int(i)]) for p, i in zip(points, found, strict=True)]

    def search(self, *, pos: Sequence[Circle | Range | Polygon] = (),
               maxrec: int | None = None, **constraints: Sequence[object],
               ) -> tuple[list[ImageRecord], bool]:
        """SIA 2 search: records matching every constraint, and whether MAXREC cut them.

        ``pos``: shapes; a record matches when its footprint meets any of them. Other keyword
        arguments are lists (values OR'ed, parameters AND'ed): ``band``, ``time`` (intervals
        (lo, hi) in m / MJD meeting em_min..em_max / t_min..t_max), ``fov``, ``spatres``,
        ``exptime``, ``specrp``, ``timeres`` (intervals holding the value), ``pol`` (states),
        ``id`` (case-insensitive), ``collection``, ``facility``, ``instrument``, ``dptype``,
        ``calib``, ``target``, ``format``, ``product_type``, ``band_name`` (exact). Numbers
        may stand for point intervals; ±inf opens an end. Null metadata never matches.
        """
        where, params = where_clause(constraints)
        if not pos:
            limit = None if maxrec is None else max(maxrec, 0) + 1
            records = self._select(where, params, limit=limit)
        else:
            spatial, _ = self.spatial_index()
            hit = spatial.meeting([regions.probe_of(shape) for shape in pos])
            records = [spatial.records[i] for i in np.flatnonzero(hit)]
            if where != "1":
                with self._lock:
                    allowed = {row[0] for row in self.db.execute(
                        f"SELECT obs_publisher_did FROM images WHERE {where}", params)}
                records = [r for r in records if r.obs_publisher_did in allowed]
        if maxrec is not None and len(records) > maxrec:
            return records[: max(maxrec, 0)], True
        return records, False


class LazyRecords(Sequence[ImageRecord]):
    """Index rows turned into ImageRecords on first access (most lookups touch few)."""

    def __init__(self, names: list[str], rows: list[tuple[Any, ...]]) -> None:
        self._names = names
        self._rows = rows
        self._built: dict[int, ImageRecord] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> ImageRecord:  # type: ignore[override]
        index = int(index)
        record = self._built.get(index)
        if record is None:
            row = self._rows[index]
            record = ImageRecord.from_row(dict(zip(self._names, row, strict=True)))
            self._built[index] = record
        return record


def run_index(settings: Any) -> IndexReport:
    """Index ``settings.data_roots`` into ``settings.index_path`` with the configured mapping."""
    mapping = load_mapping(settings.mapping_file)
    index = ArchiveIndex(settings.index_path)
    try:
        report = index.update(settings.data_roots, mapping, authority=settings.authority)
    finally:
        index.close()
    for path, reason in report.failed:
        log.warning("not indexed: %s: %s", path, reason)
    return report
