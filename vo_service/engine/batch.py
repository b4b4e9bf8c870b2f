"""Many cutouts: the ONE batch pipeline of the Python API, the CLI and catalog jobs.

`plan_units` groups targets x images into per-image units (`ImageTask`); `cut_unit` cuts
one unit with its image opened once (one vectorized world->pixel call for all its
regions) and yields the results; `run_tasks` runs units on 1-16 local threads or
processes, or on any `engine.executors.Executor` (e.g. Dask); `bundle_tasks` and
`write_task_files` stream a unit's stamps into one archive or into files.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vo_service.engine import tiles
from vo_service.engine.bundle import ZipAppender, ZipStream
from vo_service.engine.cutout import (
    CutoutResult,
    Plan,
    StampStatus,
    describe_filters,
    describe_region,
    make_template,
    padded_stamp,
    plan_cutouts,
)
from vo_service.engine.executors import Executor
from vo_service.engine.reading import OpenImage, OpenImagePool
from vo_service.engine.spectral import CutoutError
from vo_service.engine.tiles import read_boxes
from vo_service.engine.writing import atomic_write, dtype_bitpix, empty_primary_bytes
from vo_service.shapes import Polygon, Range, Shape

MAX_WORKERS = 16


def iter_cutouts(image: OpenImage, regions: Sequence[Shape], *, band=None, time=None,
                 pol=None, pad: bool = False, max_pixels: int | None = None,
                 origfile: str | None = None) -> Iterator[CutoutResult]:
    """Cut every region from one open image; yields results (each with `.index`, its
    position in `regions`) in the order the pixels are read, not necessarily input order.

    Raises CutoutError when the image cannot answer the filters at all (e.g. BAND on a
    velocity cube without rest frequency); per-region problems become result statuses.
    """
    regions = list(regions)
    plans = plan_cutouts(image, regions, band=band, time=time, pol=pol, pad=pad,
                         max_pixels=max_pixels)
    filters = describe_filters(band, time, pol)
    templates: dict[int, object] = {}
    lookups = image.lookup_hdus
    for index, plan in enumerate(plans):
        if plan.read_box is None:
            yield CutoutResult(plan.status, None, plan.message, index=index,
                               reason=plan.reason)
    for index, pixels in _read_pixels(image, plans):
        plan = plans[index]
        stamp, blank = padded_stamp(image, plan, pixels) if pad else (pixels, None)
        bitpix = dtype_bitpix(stamp.dtype)
        template = templates.get(bitpix)
        if template is None:
            template = templates[bitpix] = make_template(image, origfile, bitpix)
        region = regions[index]
        request = describe_region(region) + (f" {filters}" if filters else "")
        yield CutoutResult(
            plan.status, plan.box, plan.message, stamp, index=index, request=request,
            shape_name=type(region).__name__.upper(), template=template, blank=blank,
            lookup_hdus=lookups,
        )


def _read_pixels(image: OpenImage, plans: list[Plan]) -> Iterator[tuple[int, np.ndarray]]:
    wanted = [(index, plan.read_box) for index, plan in enumerate(plans) if plan.read_box]
    if image.is_compressed and len(image.fits_shape) == 2:
        yield from read_boxes(image, wanted)  # each tile decompressed once per batch
        return
    for index, box in wanted:
        yield index, image.read(box)


def cut_many(path: str | Path, hdu: int | str, regions: Sequence[Shape], **options
             ) -> list[CutoutResult]:
    """All regions cut from one image, in input order (options as for `cut`)."""
    with OpenImage(path, hdu) as image:
        results = list(iter_cutouts(image, regions, **options))
    return sorted(results, key=lambda result: result.index)


# ---- writing many stamps -------------------------------------------------------------

def multi_extension_chunks(results: Iterable[CutoutResult],
                           extname: Callable[[CutoutResult], str] | None = None
                           ) -> Iterator[bytes]:
    """One FITS file: empty primary HDU + one image extension per stamp (astrocut's
    single_outfile). Lookup-table extensions get distinct EXTVERs per stamp."""
    yield empty_primary_bytes()
    extver_offset = 0
    for result in results:
        if not result.has_stamp:
            continue
        yield from (bytes(part) for part in result.chunks(
            primary=False, extver_offset=extver_offset,
            extname=extname(result) if extname else None))
        if result.lookup_hdus:
            extver_offset += max(int(h.header.get("EXTVER", 1)) for h in result.lookup_hdus)


def write_multi_extension(results: Iterable[CutoutResult], path: str | Path,
                          extname: Callable[[CutoutResult], str] | None = None) -> Path:
    return atomic_write(path, multi_extension_chunks(results, extname))


# ---- many images in parallel ---------------------------------------------------------

@dataclass(frozen=True)
class ImageTask:
    """One unit of batch work: regions to cut from one image HDU (picklable, for worker
    processes); made by `plan_units`, cut by `cut_unit`."""

    path: Path
    hdu: int | str
    regions: tuple[Shape, ...]
    band: tuple[float, float] | None = None
    time: tuple[float, float] | None = None
    pol: tuple[str, ...] | None = None
    pad: bool = False
    max_pixels: int | None = None
    origfile: str | None = None
    names: tuple[str, ...] | None = None  # stamp file names, one per region
    image: int = 0  # position of the image among the planned images
    targets: tuple[int, ...] | None = None  # positions of the regions among all targets

    def target(self, index: int) -> int:
        """Position among all planned targets of region `index` of this unit."""
        return index if self.targets is None else self.targets[index]

    def stamp_name(self, index: int) -> str:
        """File (or archive member) name of region `index`'s stamp."""
        if self.names is not None:
            return self.names[index]
        return f"{Path(self.path).name.split('.')[0]}_h{self.hdu}_{index:05d}.fits"

    def options(self) -> dict:
        return {"band": self.band, "time": self.time, "pol": self.pol, "pad": self.pad,
                "max_pixels": self.max_pixels, "origfile": self.origfile}


@dataclass(frozen=True)
class StampRecord:
    """What happened to one region of a task (for manifests)."""

    index: int
    status: str
    message: str
    path: Path | None
    pixel_box: tuple[tuple[int, int], ...] | None


IMAGE_FAILED = "image"  # `CutoutResult.reason` of regions whose image could not answer


def plan_units(images: Sequence[tuple[str | Path, int | str]], regions: Sequence[Shape], *,
               chunk: int | None = None, names: Callable[[int, int], str] | None = None,
               **options) -> list[ImageTask]:
    """Targets x images -> per-image units: every region on every (path, HDU) image.

    ``chunk``: at most this many targets per unit, neighbours together (ordered by
    declination, so a unit covers a band of an image and a tile-compressed image is
    decompressed about once); None keeps all targets of an image in one unit, in input
    order. ``names(target, image)``: each stamp's file name. ``options``: the `ImageTask`
    cutting options (band, time, pol, pad, max_pixels, origfile), the same for all.
    """
    count = len(regions)
    if chunk is None or chunk >= count:
        groups = [tuple(range(count))] if count else []
    else:
        order = np.argsort([_declination(region) for region in regions], kind="stable")
        groups = [tuple(order[start:start + chunk].tolist())
                  for start in range(0, count, max(1, chunk))]
    units = []
    for position, (path, hdu) in enumerate(images):
        for members in groups:
            units.append(ImageTask(
                Path(path), hdu, tuple(regions[i] for i in members), **options,
                names=None if names is None else tuple(names(i, position) for i in members),
                image=position, targets=members))
    return units


def _declination(region: Shape) -> float:
    """A declination to order regions by (a polygon's first vertex, a range's lower edge)."""
    if isinstance(region, Polygon):
        return float(region.vertices[0][1])
    if isinstance(region, Range):
        return float(region.dec_min)
    return float(region.dec)  # Circle, CenterSize


def cut_unit(task: ImageTask, images: OpenImagePool | None = None
             ) -> Iterator[CutoutResult]:
    """Cut one unit: its image opened once (from ``images``, the worker process's pool, or
    opened and closed here), every region cut; yields results as pixels are read
    (`.index`: the region's position in ``task.regions``).

    An image that cannot answer (unreadable, no celestial WCS, filters it cannot apply)
    yields an 'error' result, with reason `IMAGE_FAILED`, for each region not yet answered.
    """
    answered: set[int] = set()
    try:
        with _opened(task, images) as image:
            for result in iter_cutouts(image, task.regions, **task.options()):
                answered.add(result.index)
                yield result
    except (CutoutError, OSError, ValueError) as exc:
        message = str(exc) if isinstance(exc, CutoutError) else f"{type(exc).__name__}: {exc}"
        for index in range(len(task.regions)):
            if index not in answered:
                yield CutoutResult(StampStatus.ERROR, None, message, index=index,
                                   reason=IMAGE_FAILED)


def cut_task(task: ImageTask) -> list[CutoutResult]:
    """All stamps of one unit in memory, in input order (`cut_unit`)."""
    return sorted(cut_unit(task), key=lambda result: result.index)


def write_task_files(task: ImageTask, directory: str | Path) -> list[StampRecord]:
    """Cut one task straight to one FITS file per stamp (`task.stamp_name`) in
    `directory`; returns one record per region, in input order."""
    records = []
    for result in cut_unit(task):
        path = None
        if result.has_stamp:
            path = atomic_write(Path(directory) / task.stamp_name(result.index),
                                result.chunks())
        records.append(_record(result, path))
    return sorted(records, key=lambda record: record.index)


def _cut_into_zip(task: ImageTask, stream: ZipStream | ZipAppender) -> list[StampRecord]:
    return _records_from_rows(task, _zip_rows(task, stream))


StampRow = tuple[int, str, str, bool, tuple[tuple[int, int], ...] | None]


def _zip_rows(task: ImageTask, stream: ZipStream | ZipAppender) -> list[StampRow]:
    """Cut one task into a ZIP; one (index, status, message, stored, pixel box) per
    region, in input order: plain tuples pickle and unpickle in a fraction of the time of
    `StampRecord`s with `Path`s, which mattered when a worker sends them to the parent."""
    rows = []
    for result in cut_unit(task):
        if result.has_stamp:
            stream.add(task.stamp_name(result.index), result.chunks())
        box = result.pixel_box.ranges if result.pixel_box else None
        rows.append((result.index, result.status, result.message, result.has_stamp, box))
    return sorted(rows)


def _records_from_rows(task: ImageTask, rows: list[StampRow]) -> list[StampRecord]:
    """Records of `_zip_rows` rows; `path` is the member name of stored stamps."""
    return [StampRecord(index, status, message,
                        Path(task.stamp_name(index)) if stored else None, box)
            for index, status, message, stored, box in rows]


def append_task_zip(task: ImageTask, target: str | Path
                    ) -> tuple[list, list[StampRecord]]:
    """Cut one task straight into the bundle at `target` (a `ZipStream`'s file) from a
    worker process; returns (entries, records) for `ZipStream.adopt`. Records carry the
    member name as `path`."""
    entries, rows = _append_rows(task, target)
    return entries, _records_from_rows(task, rows)


def _append_rows(task: ImageTask, target: str | Path) -> tuple[list, list[StampRow]]:
    """`append_task_zip` with rows (`_zip_rows`) instead of records, for worker processes."""
    appender = ZipAppender(target)
    try:
        rows = _zip_rows(task, appender)
    finally:
        entries = appender.close()
    return entries, rows


def bundle_tasks(tasks: Sequence[ImageTask], target: str | Path, *, workers: int = 1
                 ) -> dict[int, list[StampRecord]]:
    """Cut many tasks (images, or slices of one image's targets) into ONE ZIP at `target`.

    One worker writes straight into the archive; 2-16 worker processes append their
    stamps to it themselves (`ZipAppender`), so no stamp bytes travel through pipes or
    part files and the parent only writes the central directory.
    Returns {task index: records} (records' `path` is the member name)."""
    archive = ZipStream(target)
    done: dict[int, list[StampRecord]] = {}
    try:
        if max(1, min(MAX_WORKERS, int(workers))) == 1 or len(tasks) <= 1:
            with _frozen_heap():
                for index, task in enumerate(tasks):
                    done[index] = _cut_into_zip(task, archive)
            return done
        archive.flush()  # the file exists before any worker appends to it
        for index, (entries, rows) in run_tasks(
                tasks, _append_rows, workers=workers, processes=True,
                args=(str(target),)):
            archive.adopt(entries)
            done[index] = _records_from_rows(tasks[index], rows)
    finally:
        archive.close()
    return done


def _record(result: CutoutResult, path: Path | None) -> StampRecord:
    box = result.pixel_box.ranges if result.pixel_box else None
    return StampRecord(result.index, result.status, result.message, path, box)


def run_tasks(tasks: Sequence[ImageTask], handle: Callable, *, workers: int = 1,
              processes: bool = False, args: tuple = (), executor: Executor | None = None
              ) -> Iterator[tuple[int, object]]:
    """Run `handle(task, *args)` for every task with 1-16 workers; yields (task index,
    result) as tasks finish. Threads suit I/O-bound work (numpy and astropy release the
    GIL while reading); processes suit CPU-bound work (decompression, many small stamps).
    `handle` must be a module-level function when processes=True.
    ``executor``: run the tasks there instead (any `engine.executors.Executor`: local
    threads or processes, a Dask cluster); it is left running for the caller."""
    if executor is not None:
        yield from _run_on(executor, tasks, handle, args)
        return
    workers = max(1, min(MAX_WORKERS, int(workers)))
    if workers == 1 or len(tasks) <= 1:
        with _frozen_heap():
            for index, task in enumerate(tasks):
                yield index, handle(task, *args)
        return
    pool: Executor = (ProcessPoolExecutor(workers, initializer=start_worker) if processes
                      else ThreadPoolExecutor(workers))
    with pool, _frozen_heap():  # forked workers start on the first submit
        futures = {pool.submit(handle, task, *args): index
                   for index, task in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _run_on(executor: Executor, tasks: Sequence[ImageTask], handle: Callable, args: tuple
            ) -> Iterator[tuple[int, object]]:
    with _frozen_heap():  # forked workers may start on the first submit
        futures = {executor.submit(handle, task, *args): index
                   for index, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:  # the caller stopped early, or a task failed
                future.cancel()


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the garbage collector off the objects that exist before a batch runs
    (gc.freeze) until the outermost of the batches running at once is done. Forked
    workers inherit the frozen heap, so their passes do not write to, and so copy, every
    inherited page; this process's full passes walk only new objects: walking the whole
    heap took about a third of the parent's CPU time at 10,000 stamps on two workers, and
    9 % of one process cutting them alone."""
    global _freezes
    with _freezes_lock:
        if _freezes == 0:
            gc.freeze()
        _freezes += 1
    try:
        yield
    finally:
        with _freezes_lock:
            _freezes -= 1
            if _freezes == 0:
                gc.unfreeze()


_freezes = 0  # batches running at once in this process (threads); the heap is frozen if > 0
_freezes_lock = threading.Lock()


_worker_images: OpenImagePool | None = None


def start_worker() -> None:
    """Initializer of worker processes (the engine's, and catalog jobs' on executor
    "processes"): tasks of the same image that land on one worker share one opened image
    (file, header, WCS), instead of opening it per task, and tile-compressed images are
    decoded in the worker's own thread."""
    global _worker_images, _freezes_lock
    _worker_images = OpenImagePool(size=4)
    _freezes_lock = threading.Lock()  # in case another thread held it at the fork
    tiles.DECODE_THREADS = 1  # the pool already runs a process per core


@contextlib.contextmanager
def _opened(task: ImageTask, images: OpenImagePool | None = None) -> Iterator[OpenImage]:
    """The task's image: from ``images`` or the worker's pool in a worker process, else
    opened here and closed afterwards."""
    pool = images if images is not None else _worker_images
    if pool is not None:
        with pool.image(task.path, task.hdu) as image:
            yield image
        return
    with OpenImage(task.path, task.hdu) as image:
        yield image
