"""A catalog job's manifest while the job runs: its stamps so far, reachable at once.

A catalog job lists its products (manifest, bundle, coverage …) as UWS results, not one
result per stamp, so that its job document stays small enough to poll; its stamps are
reached from the manifest's ``access_url``. For results to appear while the job runs, the
manifest is written early (after the first unit of work) and rewritten now and then with
every row so far, marked incomplete; each rewrite waits until the job has run at least
``1 / COST_SHARE`` times as long as the last one took, so rewriting costs at most about
``COST_SHARE`` of the job's time however many rows there are. Each row is rendered to its
``<TR>`` text once, as its unit of work finishes (:meth:`RunningManifest.render`, while
the workers still cut, rather than all at the end), and that text serves every rewrite
and the final manifest.

The stamps (reached from the rows' ``access_url``) are published with the manifest that
first lists them, just before it, in the job's stamps file
(:mod:`vo_service.jobs.stamp_directory`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from vo_service.jobs.context import JobContext
from vo_service.jobs.stamp_directory import StampDirectory, StampPlace
from vo_service.jobs.store import ResultFile
from vo_service.products.manifest import (
    MANIFEST_MIME,
    ExtraField,
    ManifestRow,
    render_rows,
    write_manifest,
    write_rendered,
)

MANIFEST_RESULT = "manifest"
MANIFEST_FILE = "manifest.xml"
COST_SHARE = 0.05  # most of the job's time spent rewriting the manifest while it runs
MIN_INTERVAL_SECONDS = 1.0  # least time between two rewrites
RUNNING = "the job is still running: this manifest lists the targets done so far"


def row_order(row: ManifestRow) -> tuple[int, str]:
    """Manifest rows in catalog order, a target's images by publisher DID."""
    return row.row, row.image_id or ""


class RunningManifest:
    """Writes a job's manifest, now and then while it runs and once at the end, and keeps
    it listed as the job's ``manifest`` result."""

    def __init__(self, context: JobContext, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.context = context
        self.path: Path = context.job_dir / MANIFEST_FILE
        self.clock = clock
        self._next_write = clock()  # the first unit's rows are written at once
        # id(row) -> (row, its <TR> text): holding the row keeps its id from being reused
        self._texts: dict[int, tuple[ManifestRow, str]] = {}
        self._stamps = StampDirectory(context.job_dir)
        self._unpublished: list[StampPlace] = []  # stamps of rows not yet written
        self.writes = 0

    def add_stamps(self, stamps: Sequence[StampPlace]) -> None:
        """Stamps (byte ranges of the job's bundle) that rows added since the last write
        refer to (published with it)."""
        self._unpublished.extend(stamps)

    def render(self, rows: Sequence[ManifestRow], texts: Sequence[str] | None = None
               ) -> None:
        """Render ``rows``, not rendered before, for the writes to come (``texts``: their
        ``<TR>`` texts, rendered already by the worker that made them)."""
        for row, text in zip(rows, render_rows(rows) if texts is None else texts,
                             strict=True):
            self._texts[id(row)] = (row, text)

    def update(self, rows: Sequence[ManifestRow], infos: Mapping[str, str]) -> None:
        """Write the rows so far if the last write is long enough ago."""
        started = self.clock()
        if started < self._next_write or not rows:
            return
        self._write(sorted(rows, key=row_order), {**infos, "incomplete": RUNNING})
        cost = self.clock() - started
        self._next_write = self.clock() + max(MIN_INTERVAL_SECONDS, cost / COST_SHARE)

    def finish(self, rows: Sequence[ManifestRow], infos: Mapping[str, str],
               extra_fields: Sequence[ExtraField] = ()) -> None:
        """Write the final manifest (``rows`` in their order; extra FIELDs, whose values
        came after the rows were rendered, render every row anew)."""
        if extra_fields:
            self._publish_stamps()
            size = write_manifest(self.path, rows, infos=infos, extra_fields=extra_fields)
            self._publish(size)
            return
        self._write(rows, infos)  # publishes the stamps first, too

    def _write(self, rows: Sequence[ManifestRow], infos: Mapping[str, str]) -> None:
        """Write ``rows`` in this order, rendering only those not rendered before."""
        self._publish_stamps()
        self.render([row for row in rows if id(row) not in self._texts])
        self._publish(write_rendered(self.path, [self._texts[id(row)][1] for row in rows],
                                     infos=infos))

    def _publish_stamps(self) -> None:
        """Publish the stamps before the manifest file that points at them."""
        self._stamps.append(self._unpublished)
        self._unpublished = []

    def _publish(self, size: int) -> None:
        self.context.put_result(ResultFile(MANIFEST_RESULT, MANIFEST_FILE, MANIFEST_MIME,
                                           size))
        self.writes += 1
