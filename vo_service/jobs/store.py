"""SQLite store of UWS jobs: their phase, times, parameters, results and progress.

One database file under ``settings.jobs_dir`` in WAL mode, so that every job survives a
restart; result files live in ``<jobs_dir>/<job id>/``. One connection shared by the
event loop and the worker threads, serialised by a lock (every statement is short).
Commits are not synced to disk one by one (``synchronous = NORMAL``, as the cache index):
a commit survives the process being killed; only a crash of the whole machine may lose the
last ones (the database stays whole, and a job that was running is resumed), while a sync
per commit cost ~4 ms, several per unit of a catalog job (results, progress, outcomes).

On a full disk the store deletes its space reserve (:mod:`vo_service.jobs.reserve`) and
tries again; a final phase or a deletion that still cannot be written is kept in memory
(:class:`~vo_service.jobs.unsaved.UnsavedChanges`), shown to every reader as if written,
and written by :meth:`JobStore.flush_unsaved` once the disk has room.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from vo_service.engine.cutout import StampStatus
from vo_service.errors import storage_failure
from vo_service.jobs.outcome_memo import RememberedOutcome, decode_ranges, encode_ranges
from vo_service.jobs.phases import FINAL_PHASES, Phase
from vo_service.jobs.reserve import SpaceReserve
from vo_service.jobs.unsaved import UnsavedChanges

ANY_OWNER = object()  # JobStore.list: jobs of every owner
ORPHAN_AGE_SECONDS = 3600
# Result rows deleted per transaction: a job of 100,000 results is deleted through a WAL of
# under 1 MB reused between chunks, not one that must grow by 14 MB on a full disk.
DELETE_CHUNK = 2000


def format_time(moment: datetime) -> str:
    """UTC time as UWS wants it: ``T``-separated, milliseconds, ``Z`` (sortable as text).

    isoformat, not strftime: ``%Y`` does not pad years before 1000 to four digits.
    """
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``Z``, an offset or none = UTC); ValueError if unreadable."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Parameter:
    """One job parameter as a UWS ``parameter`` element shows it."""

    name: str
    value: str
    by_reference: bool = False


@dataclass(frozen=True)
class ResultFile:
    """One job result: a file under the job's directory, served at ``results/<result_id>``.

    ``listed``: shown in the job document and the results list. A catalog job's stamps are
    not (they are reached from its manifest, so that the job document stays small); they
    are served at their URL all the same. Such rows come from earlier versions: stamps
    are now listed in the job's stamps file (:mod:`vo_service.jobs.stamp_directory`).
    ``offset``: the result is the ``size`` bytes at this offset of ``file`` (a catalog
    job's stamp inside its ZIP bundle, where stamps are stored uncompressed); None: the
    whole file.
    """

    result_id: str
    file: str
    mime_type: str
    size: int
    listed: bool = True
    offset: int | None = None


@dataclass
class JobRecord:
    """A job's row: everything the UWS job document shows apart from lists."""

    job_id: str
    kind: str
    phase: Phase
    creation_time: str
    execution_duration: int
    destruction: str | None
    base_url: str
    run_id: str | None = None
    owner_id: str | None = None
    quote: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    progress_done: int = 0
    progress_total: int = 0
    attempts: int = 0

    @classmethod
    def from_row(cls, row: dict[str, object]) -> JobRecord:
        values = dict(row)
        values["phase"] = Phase(values["phase"])
        return cls(**values)  # type: ignore[arg-type]


_JOB_COLUMNS = {
    "job_id": str, "kind": str, "phase": str, "creation_time": str,
    "execution_duration": int, "destruction": str, "base_url": str, "run_id": str,
    "owner_id": str, "quote": str, "start_time": str, "end_time": str,
    "error_type": str, "error_message": str, "progress_done": int,
    "progress_total": int, "attempts": int,
}


class JobStore:
    """Jobs, parameters and results in SQLite; files in one directory per job."""

    def __init__(self, jobs_dir: Path, reserve: SpaceReserve | None = None) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.unsaved = UnsavedChanges(self._apply, reserve)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.jobs_dir / "jobs.sqlite", check_same_thread=False, isolation_level=None
        )
        connection.execute("PRAGMA busy_timeout = 10000")
        self._db = sqlite_utils.Database(connection)
        self._db.enable_wal()
        connection.execute("PRAGMA synchronous = NORMAL")  # see the module's docstring
        self._lock = threading.RLock()
        self._create_tables()

    def _create_tables(self) -> None:
        with self._lock:
            self._db["jobs"].create(_JOB_COLUMNS, pk="job_id", if_not_exists=True)
            self._db["parameters"].create(
                {"job_id": str, "seq": int, "name": str, "value": str, "by_reference": int},
                pk=("job_id", "seq"), if_not_exists=True,
            )
            self._db["results"].create(
                {"job_id": str, "seq": int, "result_id": str, "file": str,
                 "mime_type": str, "size": int, "listed": int, "offset": int},
                pk=("job_id", "seq"), if_not_exists=True, defaults={"listed": 1},
            )
            # columns a store made by an earlier version lacks
            self._add_column("results", "listed", "INTEGER NOT NULL DEFAULT 1")
            self._add_column("results", "offset", "INTEGER")
            self._db["stamp_outcomes"].create(
                {"key": str, "status": str, "message": str, "ranges": str, "stamp": int,
                 "created_at": float},
                pk="key", if_not_exists=True,
            )
            self._db["jobs"].create_index(["phase"], if_not_exists=True)
            self._db["jobs"].create_index(["creation_time"], if_not_exists=True)
            self._db["results"].create_index(["job_id", "result_id"], if_not_exists=True)

    def _add_column(self, table: str, column: str, declaration: str) -> None:
        """Add ``column`` to ``table`` unless it is there (another process may race)."""
        if column in self._db[table].columns_dict:
            return
        try:
            self._db.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {declaration}')
        except sqlite3.OperationalError as exc:  # another process added it first
            if "duplicate column" not in str(exc):
                raise

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.conn.close()

    def job_dir(self, job_id: str) -> Path:
        """The directory holding a job's uploads and result files."""
        return self.jobs_dir / job_id

    # -- jobs -------------------------------------------------------------------------

    def create(self, job: JobRecord, parameters: Sequence[Parameter]) -> None:
        """Store a new job and its parameters."""
        row = {name: getattr(job, name) for name in _JOB_COLUMNS}
        row["phase"] = str(job.phase)
        with self._lock, self._db.conn:
            self._db["jobs"].insert(row)
            self._insert_parameters(job.job_id, parameters)

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None if there is no such job."""
        with self._lock:
            rows = list(self._db.query("SELECT * FROM jobs WHERE job_id = ?", [job_id]))
            row = self.unsaved.applied(job_id, rows[0] if rows else None)
        return JobRecord.from_row(row) if row else None

    def update(self, job_id: str, **changes: object) -> None:
        """Change some columns of a job."""
        if "phase" in changes:
            changes["phase"] = str(changes["phase"])
        with self._lock:
            self._db["jobs"].update(job_id, changes)

    def change_phase(
        self, job_id: str, phase: Phase, *, only_from: Iterable[Phase], **changes: object
    ) -> bool:
        """Move a job to ``phase`` if it is in one of ``only_from``; True if it moved.

        The check and the write are one statement, so a worker finishing a job and a
        client aborting it cannot both win. A final phase that a full disk refuses is kept
        in memory (see the module's docstring); any other storage failure raises.
        """
        sources = [str(p) for p in only_from]
        assignments = {"phase": str(phase), **changes}
        sets = ", ".join(f"{name} = ?" for name in assignments)
        marks = ", ".join("?" for _ in sources)
        with self._lock:
            if self.unsaved.holds(job_id):
                current = self.unsaved.phase(job_id)
                if current is None or current not in sources:
                    return False
                self.unsaved.write_or_keep(job_id,
                                           {**self.unsaved.changes(job_id), **assignments})
                return True
            try:
                cursor = self.unsaved.with_reserve(lambda: self._db.execute(
                    f"UPDATE jobs SET {sets} WHERE job_id = ? AND phase IN ({marks})",
                    [*assignments.values(), job_id, *sources],
                ))
            except sqlite3.OperationalError as exc:
                if phase not in FINAL_PHASES or storage_failure(exc) is None:
                    raise
                job = self.get(job_id)
                if job is None or str(job.phase) not in sources:
                    return False
                self.unsaved.keep(job_id, assignments, exc)
                return True
            return cursor.rowcount == 1

    # -- writes a full disk refuses ---------------------------------------------------

    def _apply(self, job_id: str, changes: dict[str, object] | None) -> None:
        """Write kept columns of a job, or delete its rows (results in chunks)."""
        if changes is not None:
            self._db["jobs"].update(job_id, changes)
            return
        with self._db.conn:
            for table in ("parameters", "jobs"):
                self._db.execute(f"DELETE FROM {table} WHERE job_id = ?", [job_id])
        self._delete_results("job_id = ?", [job_id])

    def _delete_results(self, where: str, values: list[object]) -> None:
        """Delete result rows matching ``where``, DELETE_CHUNK per transaction, with a
        checkpoint after each so that the next one reuses the same WAL pages."""
        while self._db.execute(
                f"DELETE FROM results WHERE rowid IN (SELECT rowid FROM results WHERE {where} "
                f"LIMIT {DELETE_CHUNK})", values).rowcount == DELETE_CHUNK:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def flush_unsaved(self) -> int:
        """Write what a full disk refused; returns how many jobs are still unsaved."""
        with self._lock:
            return self.unsaved.flush()

    def list(
        self, *, phases: Iterable[Phase] = (), after: str | None = None,
        last: int | None = None, owner_id: str | None | object = ANY_OWNER,
    ) -> list[JobRecord]:
        """Jobs filtered as the UWS job list does (§2.2.1.1), oldest first unless ``last``;
        ``owner_id`` keeps one owner's jobs (None: the anonymous ones)."""
        with self._lock:
            if self.unsaved:  # filter after applying what is kept in memory
                jobs = [job for job in self._list((), after, None, owner_id)
                        if not phases or job.phase in set(phases)]
                return jobs[::-1][:last] if last is not None else jobs
            return self._list(phases, after, last, owner_id)

    def _list(self, phases: Iterable[Phase], after: str | None, last: int | None,
              owner_id: str | None | object) -> list[JobRecord]:
        where, values = [], []
        phase_names = [str(p) for p in phases]
        if phase_names:
            where.append(f"phase IN ({', '.join('?' for _ in phase_names)})")
            values.extend(phase_names)
        else:
            where.append("phase != ?")
            values.append(str(Phase.ARCHIVED))
        if after is not None:
            where.append("creation_time > ?")
            values.append(after)
        if owner_id is not ANY_OWNER:
            where.append("owner_id IS ?")
            values.append(owner_id)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)}"
        if last is not None:
            sql += " ORDER BY creation_time DESC, rowid DESC LIMIT ?"
            values.append(last)
        else:
            sql += " ORDER BY creation_time, rowid"
        with self._lock:
            rows = (self.unsaved.applied(row["job_id"], row) for row in self._db.query(sql, values))
            return [JobRecord.from_row(row) for row in rows if row is not None]

    def expired(self, moment: str) -> list[str]:
        """IDs of jobs whose destruction time has passed."""
        with self._lock:
            rows = self._db.query(
                "SELECT job_id FROM jobs WHERE destruction IS NOT NULL AND destruction <= ?",
                [moment],
            )
            return [row["job_id"] for row in rows]

    def count(self, phases: Iterable[Phase]) -> int:
        """How many jobs are in any of ``phases``."""
        names = [str(p) for p in phases]
        with self._lock:
            if self.unsaved:
                return len(self.list(phases=phases))
            rows = list(self._db.query(
                f"SELECT count(*) AS n FROM jobs WHERE phase IN ({', '.join('?' * len(names))})",
                names,
            ))
        return int(rows[0]["n"])

    def owner_usage(self, owner_id: str | None, phases: Iterable[Phase]) -> tuple[int, int]:
        """(jobs of ``owner_id`` in ``phases``, bytes of all its results); None = anonymous."""
        names = [str(p) for p in phases]
        with self._lock:
            if self.unsaved:
                unfinished = len(self.list(phases=phases, owner_id=owner_id))
                sizes = self._db.query(
                    "SELECT r.job_id, sum(r.size) AS n FROM results r JOIN jobs j "
                    "ON r.job_id = j.job_id WHERE j.owner_id IS ? GROUP BY r.job_id", [owner_id])
                return unfinished, sum(int(row["n"]) for row in sizes
                                       if not self.unsaved.deleted(row["job_id"]))
            jobs = list(self._db.query(
                f"SELECT count(*) AS n FROM jobs WHERE owner_id IS ? AND phase IN "
                f"({', '.join('?' * len(names))})", [owner_id, *names]))
            sizes = list(self._db.query(
                "SELECT coalesce(sum(r.size), 0) AS n FROM results r JOIN jobs j "
                "ON r.job_id = j.job_id WHERE j.owner_id IS ?", [owner_id]))
        return int(jobs[0]["n"]), int(sizes[0]["n"])

    def delete(self, job_id: str) -> None:
        """Remove a job's files, then forget it: in this order the files free space on a
        full disk for the database to record the deletion (else it is kept in memory)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        with self._lock:
            self.unsaved.write_or_keep(job_id, None)

    def forget_orphans(self, running: Iterable[str]) -> int:
        """Remove rows and old folders of jobs that no longer exist (deleted while running).

        Jobs in ``running`` are left alone: their worker may still be writing.
        """
        busy = set(running)
        with self._lock:
            known = {row["job_id"] for row in self._db.query("SELECT job_id FROM jobs")}
            self._db.execute(
                "DELETE FROM parameters WHERE job_id NOT IN (SELECT job_id FROM jobs)")
            self._delete_results("job_id NOT IN (SELECT job_id FROM jobs)", [])
        removed = 0
        settled = time.time() - ORPHAN_AGE_SECONDS  # spares folders of jobs being created
        for folder in self.jobs_dir.iterdir():
            if (folder.is_dir() and folder.name not in known and folder.name not in busy
                    and folder.stat().st_mtime < settled):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    # -- outcomes of batch stamps -----------------------------------------------------

    def stamp_outcomes(self, keys: Sequence[str]) -> dict[str, RememberedOutcome]:
        """Known outcomes of (target, image) keys."""
        found: dict[str, RememberedOutcome] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = list(keys[start:start + 500])
                rows = self._db.execute(
                    "SELECT key, status, message, ranges, stamp FROM stamp_outcomes "
                    f"WHERE key IN ({', '.join('?' * len(part))})", part).fetchall()
                for key, status, message, ranges, stamp in rows:
                    found[key] = RememberedOutcome(StampStatus(status), message or "",
                                                   decode_ranges(ranges), bool(stamp))
        return found

    def save_stamp_outcomes(self, outcomes: dict[str, RememberedOutcome]) -> None:
        """Remember outcomes of (target, image) keys in one transaction."""
        if not outcomes:
            return
        moment = time.time()
        with self._lock, self._db.atomic():  # one transaction (the connection autocommits)
            self._db.conn.executemany(
                "INSERT OR REPLACE INTO stamp_outcomes "
                "(key, status, message, ranges, stamp, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(key, str(o.status), o.message, encode_ranges(o.ranges), int(o.has_stamp),
                  moment) for key, o in outcomes.items()])

    def forget_stamp_outcomes(self, older_than_seconds: float) -> None:
        """Drop outcomes recorded long ago (the table must not grow forever)."""
        with self._lock:
            self._db.execute("DELETE FROM stamp_outcomes WHERE created_at < ?",
                             [time.time() - older_than_seconds])

    # -- parameters -------------------------------------------------------------------

    def _insert_parameters(self, job_id: str, parameters: Sequence[Parameter]) -> None:
        self._db["parameters"].insert_all(
            {"job_id": job_id, "seq": seq, "name": p.name, "value": p.value,
             "by_reference": int(p.by_reference)}
            for seq, p in enumerate(parameters)
        )

    def parameters(self, job_id: str) -> list[Parameter]:
        """A job's parameters in the order they were given."""
        with self._lock:
            rows = self._db.query(
                "SELECT name, value, by_reference FROM parameters WHERE job_id = ? ORDER BY seq",
                [job_id],
            )
            return [Parameter(r["name"], r["value"], bool(r["by_reference"])) for r in rows]

    def replace_parameters(self, job_id: str, parameters: Sequence[Parameter]) -> None:
        """Replace all of a job's parameters (allowed while it is PENDING)."""
        with self._lock, self._db.conn:
            self._db.execute("DELETE FROM parameters WHERE job_id = ?", [job_id])
            self._insert_parameters(job_id, parameters)

    # -- results ----------------------------------------------------------------------

    def add_results(self, job_id: str, results: Sequence[ResultFile]) -> None:
        """Append results to a job (visible at once, also while it runs), in one
        transaction."""
        if not results:
            return
        with self._lock, self._writing():
            self._insert_results(job_id, results)

    def put_result(self, job_id: str, result: ResultFile) -> None:
        """Add a result, or replace the one of the same id in place (a file rewritten while
        the job runs, e.g. a catalog job's manifest)."""
        with self._lock, self._writing():
            changed = self._db.execute(
                'UPDATE results SET file = ?, mime_type = ?, size = ?, listed = ?, "offset" = ? '
                "WHERE job_id = ? AND result_id = ?",
                [result.file, result.mime_type, result.size, int(result.listed),
                 result.offset, job_id, result.result_id]).rowcount
            if not changed:
                self._insert_results(job_id, [result])

    def set_result_size(self, job_id: str, result_id: str, size: int) -> None:
        """Record the size of a result made after it was listed (a job's MOC)."""
        with self._lock, self._writing():
            self._db.execute("UPDATE results SET size = ? WHERE job_id = ? AND result_id = ?",
                             [size, job_id, result_id])

    def _insert_results(self, job_id: str, results: Sequence[ResultFile]) -> None:
        start = self._db.execute(
            "SELECT coalesce(max(seq) + 1, 0) FROM results WHERE job_id = ?",
            [job_id]).fetchone()[0]
        self._db.conn.executemany(
            'INSERT INTO results (job_id, seq, result_id, file, mime_type, size, listed, "offset") '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(job_id, start + i, r.result_id, r.file, r.mime_type, r.size, int(r.listed),
              r.offset) for i, r in enumerate(results)])

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction that takes the write lock at once (BEGIN IMMEDIATE): a
        read first would make the later write fail at once ("database is locked") when
        another process (a Dask worker, another server process) wrote meanwhile, instead
        of waiting for its turn."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def results(self, job_id: str) -> list[ResultFile]:
        """A job's listed results in the order they appeared."""
        with self._lock:
            rows = self._db.query(
                'SELECT result_id, file, mime_type, size, "offset" FROM results '
                "WHERE job_id = ? AND listed ORDER BY seq", [job_id],
            )
            return [ResultFile(**row) for row in rows]

    def result(self, job_id: str, result_id: str) -> ResultFile | None:
        """One result by its id (listed or not), or None."""
        with self._lock:
            rows = list(self._db.query(
                'SELECT result_id, file, mime_type, size, listed, "offset" FROM results '
                "WHERE job_id = ? AND result_id = ?", [job_id, result_id],
            ))
        return ResultFile(**{**rows[0], "listed": bool(rows[0]["listed"])}) if rows else None

    def clear_results(self, job_id: str) -> None:
        """Forget a job's results (before it runs again after a restart)."""
        with self._lock:
            self._db.execute("DELETE FROM results WHERE job_id = ?", [job_id])
