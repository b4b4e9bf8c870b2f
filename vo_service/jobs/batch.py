"""Catalog batch jobs: plan every target x image with one vectorized index lookup, cut
each image's targets in one pass on a worker pool, publish stamps as they come (served as
results, reached from the manifest; the job document lists only the job's products, see
``running_manifest.py``), then write the manifest VOTable and close the ZIP bundle.

Every stamp goes through the cutout cache under a key of (source image identity, target
position and size, format): a target already cut from the same image is never cut again.

Stamp names: ``<band>/r<row>_<target id>__<image>.<ext>`` in the bundle, and the same with
``_`` for ``/`` as the result id. The catalog row number keeps them unique however target
IDs look once made safe for file names (``tgt/1`` and ``tgt_1``, long IDs cut at 80
characters, repeated IDs), and stable: the same catalog gives the same names.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vo_service.archive.mapping import load_mapping
from vo_service.archive.records import ImageRecord
from vo_service.catalogs import Catalog
from vo_service.engine.cutout import StampStatus
from vo_service.errors import UsageError, storage_failure
from vo_service.jobs.batch_cut import Outcome, StampTask, Target
from vo_service.jobs.batch_params import (
    DEFAULT_SIZE_PIX,
    BatchRequest,
    load_catalog,
    parse_batch_request,
    uploaded,
)
from vo_service.jobs.batch_photometry import (
    MEASURED,
    add_photometry,
    photometry_planned,
    photometry_target,
)
from vo_service.jobs.bundle_parts import PARTS_FOLDER
from vo_service.jobs.collector import fewer_collections
from vo_service.jobs.executors import as_finished
from vo_service.jobs.job_coverage import add_coverage_result
from vo_service.jobs.running_manifest import RunningManifest, row_order
from vo_service.jobs.service import JobContext, JobFailed, Upload
from vo_service.jobs.store import Parameter, ResultFile
from vo_service.jobs.unit_rows import MIME, manifest_row, stamp_result_id
from vo_service.products import stitching
from vo_service.products.cutouts import changed_since_indexed
from vo_service.products.job_products import lookup_targets, product_plan
from vo_service.products.manifest import ZIP_MIME, Bundle, ManifestRow
from vo_service.products.stamp_photometry import measure_unit, photometry_units

log = logging.getLogger(__name__)
# Targets per unit of work: small enough that ABORT and progress react within a second,
# large enough that one image open + one world->pixel call serves many stamps.
CHUNK_TARGETS = 256
ROW_DIGITS = 6  # r000123: names sort by row in catalogs of up to a million rows
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str) -> str:
    """``text`` made safe as a file name and URL path segment."""
    cleaned = _UNSAFE.sub("_", text).strip("._") or "target"
    return cleaned[:80]


def unique_image_name(record, taken: set[str]) -> str:
    """A readable name for an image's stamps, unique within the job (and remembered).

    ``obs_id`` is not unique (several HDUs of one file, one file name at several epochs):
    then the HDU, then a digest of the publisher DID, tell them apart.
    """
    name = safe_name(record.obs_id)
    if name in taken:
        name = f"{name}_hdu{record.hdu}"
    if name in taken:
        digest = hashlib.sha1(record.obs_publisher_did.encode()).hexdigest()[:8]
        name = f"{safe_name(record.obs_id)}_{digest}"
    base, number = name, 1
    while name in taken:  # obs_ids alike in their first 80 characters
        number += 1
        name = f"{base}_{number}"
    taken.add(name)
    return name


def stamp_path(folder: str, row_name: str, image: str, taken: set[str]) -> str:
    """A stamp's path in the bundle without extension, ``<band>/r<row>_<id>__<image>``
    (``row_name``: ``r<row>_<id>``), unique in the job: also as a result id (``taken``
    holds the result ids given so far)."""
    path = base = f"{folder}/{row_name}__{image}"
    number = 1
    # taken already: only when band names mimic "<band>_r<row>"
    while (result_id := stamp_result_id(path)) in taken:
        number += 1
        path = f"{base}_{number}"
    taken.add(result_id)
    return path


@dataclass
class BatchPlan:
    """All the work of a job: its tasks, one image each, made as they are taken (the first
    ones run while the rest are named), and targets that need no cutting."""

    tasks: Iterator[StampTask]
    images: list[tuple[ImageRecord, int]]  # each image with its count of targets
    unmatched: list[Target]  # inside no image footprint
    bad_rows: list[tuple[int, str, str]]  # (row, target id, problem)

    @property
    def total(self) -> int:
        """Units of progress: one per (target, image) pair plus one per unmatched target."""
        return sum(count for _, count in self.images) + len(self.unmatched) + len(
            self.bad_rows)


def targets_of(catalog: Catalog, request: BatchRequest) -> tuple[list[Target], list]:
    """Good rows as Targets with their stamp size; bad rows as (row, id, problem)."""
    problems = dict(catalog.row_problems)
    use_column = catalog.size is not None and (request.size is None or request.size_column)
    targets: list[Target] = []
    for row in range(len(catalog)):
        if row in problems:
            continue
        if use_column:
            size, unit = float(catalog.size[row]), catalog.size_unit
        else:
            size = request.size if request.size is not None else DEFAULT_SIZE_PIX
            unit = request.size_unit if request.size is not None else "pix"
        if not (math.isfinite(size) and size > 0):
            problems[row] = f"size {size} is not a positive number"
            continue
        targets.append(Target(row, catalog.ids[row], float(catalog.ra[row]),
                              float(catalog.dec[row]), size, unit))
    bad = [(row, catalog.ids[row], text) for row, text in sorted(problems.items())]
    return targets, bad


def plan_batch(catalog: Catalog, request: BatchRequest, index) -> BatchPlan:
    """Find the images of every target at once and group the pairs per image (each
    image's tasks are made when the job takes them)."""
    targets, bad = targets_of(catalog, request)
    ra = np.array([t.ra for t in targets], dtype=float)
    dec = np.array([t.dec for t in targets], dtype=float)
    points, found, records = lookup_targets(  # images, PSF models and tile catalogs
        index, ra, dec, collections=request.collections, instruments=request.instruments,
        bandnames=request.bandnames, product_types=request.product_types)
    if request.times:  # TIME: only images whose [t_min, t_max] meets one of the intervals
        points, found = _in_time(points, found, records, request.times)
    images, counts = np.unique(found, return_counts=True)
    matched = set(points.tolist())
    return BatchPlan(
        _image_tasks(index, request, targets, dec, points, found, records, images,
                     len(catalog)),
        [(records[int(i)], int(count)) for i, count in zip(images, counts, strict=True)],
        [t for i, t in enumerate(targets) if i not in matched], bad)


def _image_tasks(index, request: BatchRequest, targets: list[Target], dec: np.ndarray,
                 points: np.ndarray, found: np.ndarray, records, images: np.ndarray,
                 rows: int) -> Iterator[StampTask]:
    """The tasks of each image in turn, its targets named and chunked by declination
    (``points`` index ``targets`` and their ``dec``, ``found`` ``records``; ``images``:
    the distinct values of ``found``; ``rows``: the catalog's)."""
    order = np.lexsort((points, found))
    image_names: set[str] = set()
    result_ids: set[str] = set()
    row_digits = max(ROW_DIGITS, len(str(rows)))
    row_names = [f"r{target.row + 1:0{row_digits}d}_{safe_name(target.target_id)}"
                 for target in targets]  # once per target, not per image
    for record_index in images:
        chosen = points[order[found[order] == record_index]]
        record = records[int(record_index)]
        image = unique_image_name(record, image_names)
        folder = safe_name(record.band or ("catalogs" if record.product_kind == "catalog"
                                           else "no-band"))
        product = product_plan(index, record, request.products, request.bandnames)
        chosen_points = chosen.tolist()
        names = [stamp_path(folder, row_names[point], image, result_ids)
                 for point in chosen_points]  # in catalog order: who gets "_2" is stable
        neighbours = stitching.mosaic_neighbours(index, record) if request.stitch else ()
        # neighbouring targets (by declination) share a chunk, which then covers a band of
        # the image: a tile-compressed image is decoded about once, not once per chunk
        entries = [(targets[chosen_points[k]], names[k])
                   for k in np.argsort(dec[chosen], kind="stable").tolist()]
        for start in range(0, len(entries), CHUNK_TARGETS):
            yield StampTask(record, entries[start:start + CHUNK_TARGETS], request.stitch,
                            neighbours, product)


def _in_time(points: np.ndarray, found: np.ndarray, records, intervals
             ) -> tuple[np.ndarray, np.ndarray]:
    """The (target, image) pairs whose image was taken during one of the intervals (MJD);
    images without a known time never match (SIA 2 rule)."""
    keep = np.zeros(len(found), dtype=bool)
    for k, record_index in enumerate(found):
        record = records[int(record_index)]
        if record.t_min is None or record.t_max is None:
            continue
        keep[k] = any(record.t_min <= hi and record.t_max >= lo for lo, hi in intervals)
    return points[keep], found[keep]


class BatchJob:
    """The ``batch`` job kind: a catalog uploaded with DALI UPLOAD."""

    name = "batch"

    def __init__(self, resources) -> None:
        self.resources = resources

    def validate(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]) -> float:
        """Each value's syntax, and the catalog once it is there (a job may be built up:
        completeness is checked by :meth:`check_ready` at RUN)."""
        limits = self.resources.settings.limits
        request = parse_batch_request(parameters, limits, complete=False)
        if not request.upload_name or (uploaded(request, uploads) is None and not uploads):
            return 1.0  # the catalog may come later
        catalog = load_catalog(request, uploads, limits)
        return 1.0 + 0.01 * len(catalog)

    def check_ready(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
                    ) -> None:
        """A UsageError naming what is missing (UPLOAD, its file) before the job may run."""
        request = parse_batch_request(parameters, self.resources.settings.limits)
        if uploaded(request, uploads) is None:
            raise UsageError(f"UPLOAD names the part {request.upload_name!r} but the job has "
                             "no file of that name; send it in a multipart part of that name "
                             "with POST …/parameters")

    def run(self, context: JobContext) -> None:
        with fewer_collections():  # see jobs/collector.py: its rows live until it ends
            self._run(context)

    def _run(self, context: JobContext) -> None:
        settings = self.resources.settings
        request = parse_batch_request(context.parameters, settings.limits)
        catalog = load_catalog(request, context.uploads, settings.limits)
        plan = plan_batch(catalog, request, self.resources.index)
        rows: list[ManifestRow] = [
            ManifestRow(target_id, row + 1, None, None, StampStatus.ERROR, problem)
            for row, target_id, problem in plan.bad_rows
        ] + [
            ManifestRow(t.target_id, t.row + 1, t.ra, t.dec, StampStatus.NO_OVERLAP,
                        "the position is inside no image matching the selection")
            for t in plan.unmatched
        ]
        done = len(rows)
        photometry = request.products.photometry
        total = plan.total + (photometry_planned(plan.images) if photometry else 0)
        context.set_progress(done, total)
        bundle = Bundle(context.job_dir / "bundle.zip")
        bundle_name = bundle.path.name
        manifest = RunningManifest(context)
        infos = {"job_id": context.job_id, "targets": str(len(catalog))}
        produced = 0
        science: list = []  # (target, science image) stamps for photometry
        with self.resources.executors.for_job(
            request.workers, f"vo-batch-{context.job_id[:6]}", self.resources.cache,
            context.store, request.formats, context.job_dir, bundle.path,
            context.job_url,  # the units make their manifest rows
        ) as (pool, cut_unit, in_flight):
            work = as_finished(pool, cut_unit, plan.tasks, in_flight=in_flight,
                               should_stop=context.should_stop,
                               retry_on=(BrokenProcessPool,))  # units are idempotent
            for task, future in work:
                packed = None  # outcomes + the bundle part of the unit's stamps
                try:
                    packed = future.result()
                    outcomes = packed.outcomes
                except Exception as exc:  # a bug or an unreadable image: report, go on
                    if storage_failure(exc) is not None:  # a full disk: the job cannot go on
                        raise
                    log.exception("batch job %s: cutting %s failed", context.job_id,
                                  task.record.obs_publisher_did)
                    reason = f"internal error: {exc}"
                    if isinstance(exc, BrokenProcessPool):
                        reason = ("the worker process cutting these targets stopped twice "
                                  "(killed, or out of memory); run the job again")
                    elif changed_since_indexed(task.record):  # e.g. truncated by a copy
                        reason = ("the image file changed on disk after it was indexed; "
                                  "re-index the archive (vo-service index), then run again")
                    outcomes = [Outcome(target, StampStatus.ERROR, reason)
                                for target, _ in task.entries]
                offsets: dict[str, int] = {}  # where each stamp's bytes are in the bundle
                if packed is not None and packed.part is not None:
                    offsets = bundle.add_part(Path(packed.part), packed.entries)
                elif packed is not None and packed.entries:  # appended by the unit itself
                    offsets = bundle.adopt(packed.entries)
                stamps = []
                if packed is not None and packed.rows is not None:
                    unit_rows, texts = packed.rows, packed.texts
                else:  # the unit failed: its error rows are made here
                    unit_rows, texts = [manifest_row(task.record, outcome, context.job_url)
                                        for outcome in outcomes], None
                for outcome in outcomes:
                    if photometry and outcome.ranges and outcome.status in MEASURED:
                        science.append((photometry_target(outcome), task.record))
                    for fmt, (relative, size) in outcome.files.items():
                        stamps.append((stamp_result_id(relative), bundle_name, MIME[fmt],
                                       size, offsets[relative]))  # reached from the manifest
                    produced += bool(outcome.files)
                rows += unit_rows
                manifest.render(unit_rows, texts)  # now, not all at the end
                manifest.add_stamps(stamps)  # published with the manifest listing them
                done += len(outcomes)
                context.set_progress(done, total)
                manifest.update(rows, {**infos, "stamps": str(produced)})
            measured = []
            if photometry and not context.should_stop():
                units = photometry_units(self.resources.index, science, photometry,
                                         load_mapping(settings.mapping_file).zero_points)
                for unit, future in as_finished(pool, measure_unit, units, in_flight=in_flight,
                                                should_stop=context.should_stop,
                                                retry_on=(BrokenProcessPool,)):
                    measured.extend(future.result())
                    done += len(unit.targets)
                    context.set_progress(done, total)
        rows.sort(key=row_order)
        extra_fields = []
        if photometry:
            extra_fields = add_photometry(rows, measured, photometry, context, bundle)
        infos["stamps"] = str(produced)
        if context.should_stop():
            infos["incomplete"] = "the job was stopped before every target was cut"
        manifest.finish(rows, infos, extra_fields)
        bundle.add_file(manifest.path, "manifest.xml")
        bundle_size = bundle.close()
        with contextlib.suppress(OSError):  # parts of units that never reported stay
            (context.job_dir / PARTS_FOLDER).rmdir()
        context.add_results([ResultFile("bundle", "bundle.zip", ZIP_MIME, bundle_size)])
        add_coverage_result(context)  # coverage.fits, drawn when first asked for
        if produced == 0 and not context.should_stop():
            raise JobFailed(f"UsageError: no overlap: none of the {len(catalog)} targets gave "
                            "a cutout; the manifest says why for each")
