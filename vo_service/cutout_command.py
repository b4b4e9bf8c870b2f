"""The ``vo-service cutout`` sub-command: stamps from local FITS files, no server needed.

Targets come from ``--ra/--dec`` or a catalog (VOTable, FITS table, CSV/TSV). Every target
is cut from every image HDU with a celestial WCS of every file (or the ``--hdu`` chosen),
written as FITS and/or PNG/JPEG previews. Work is split into (image, chunk of targets)
tasks of neighbouring targets: each opens its image once and converts all its targets to
pixels in one call.

Exit status: 0 when stamps were made without errors, 1 when some cutouts failed or none
could be made (e.g. no target overlaps any image), 2 on bad input. The arguments and the
images and targets they name are read in :mod:`vo_service.cutout_inputs`.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from vo_service.cutout_inputs import (
    Image,
    Targets,
    UsageProblem,
    add_cutout_arguments,
    find_images,
    preview_options,
    read_targets,
)
from vo_service.engine.batch import ImageTask, iter_cutouts, run_tasks
from vo_service.engine.composite import CompositeError, render_composite
from vo_service.engine.cutout import StampStatus
from vo_service.engine.preview import PreviewOptions
from vo_service.engine.reading import OpenImagePool
from vo_service.engine.spectral import CutoutError
from vo_service.engine.writing import atomic_write, empty_primary_bytes

__all__ = ["add_cutout_arguments", "run_cutout_command"]

MAX_CHUNK = 200  # targets per task: bounds memory and gives the progress bar steps
# Images opened by this process's jobs, kept for its next chunk of the same image
# (opening and parsing the WCS costs about as much as a hundred small stamps).
_IMAGES = OpenImagePool(size=4)


# ---- work ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One image and a chunk of targets; picklable for worker processes."""

    task: ImageTask
    image_position: int
    label: str
    names: tuple[str, ...]
    targets: tuple[int, ...]  # catalog positions of the regions
    out_dir: Path
    write_fits: bool
    preview: PreviewOptions | None
    staging: Path | None  # single-file mode: extension parts are written here first
    extver_offset: int
    rgb_staging: Path | None = None  # --rgb: each stamp's physical values (.npy) go here


@dataclass(frozen=True)
class Outcome:
    """What happened to one target on one image."""

    target: int
    image: int
    status: StampStatus
    message: str
    files: tuple[Path, ...] = ()


def _write_stamp(job: Job, result, header: fits.Header) -> Outcome:
    target = job.targets[result.index]
    if not result.has_stamp:
        return Outcome(target, job.image_position, result.status, result.message)
    stem = f"{job.names[result.index]}_{job.label}"
    files: list[Path] = []
    try:
        if job.staging is not None:
            part = job.staging / f"{target:07d}" / f"{job.image_position:05d}.part"
            atomic_write(part, result.chunks(primary=False, extver_offset=job.extver_offset,
                                             extname=job.label[:68]))
        elif job.write_fits:
            files.append(result.write(job.out_dir / f"{stem}.fits"))
        if job.rgb_staging is not None:
            plane = job.rgb_staging / f"{target:07d}" / f"{job.image_position}.npy"
            plane.parent.mkdir(parents=True, exist_ok=True)
            np.save(plane, result.physical())
        if job.preview is not None:
            suffix = "jpg" if job.preview.fmt == "jpeg" else "png"
            image_bytes = job.preview.render(result.physical())
            files.append(atomic_write(job.out_dir / f"{stem}.{suffix}", [image_bytes]))
    except (OSError, ValueError) as error:
        return Outcome(target, job.image_position, StampStatus.ERROR, f"cannot write: {error}",
                       tuple(files))
    return Outcome(target, job.image_position, result.status, result.message, tuple(files))


def run_job(job: Job) -> list[Outcome]:
    """Cut and write every target of one job (module level: runs in worker processes)."""
    outcomes: list[Outcome] = []
    try:
        with _IMAGES.image(job.task.path, job.task.hdu) as image, warnings.catch_warnings():
            # repaired header cards and NaN-ridden distortion solutions far off an image
            # are the engine's business; the command reports per-stamp statuses instead
            warnings.simplefilter("ignore", AstropyWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            for result in iter_cutouts(image, job.task.regions, pad=job.task.pad):
                outcomes.append(_write_stamp(job, result, image.header))
    except Exception as error:  # one unreadable image must not end a long run
        message = str(error) if isinstance(error, CutoutError | OSError | ValueError) else (
            f"{type(error).__name__}: {error}")
        done = {outcome.target for outcome in outcomes}
        outcomes += [Outcome(target, job.image_position, StampStatus.ERROR, message)
                     for target in job.targets if target not in done]
    return outcomes


def _jobs(images: list[Image], targets: Targets, args: argparse.Namespace,
          preview: PreviewOptions | None, staging: Path | None,
          rgb_staging: Path | None) -> list[Job]:
    count = len(targets.regions)
    chunk = max(1, min(MAX_CHUNK, math.ceil(count / (4 * args.workers))))
    # chunks of neighbouring targets (by declination): each covers a band of an image, so
    # a tile-compressed image is decompressed about once, not once per chunk
    order = np.argsort([region.dec for region in targets.regions], kind="stable").tolist()
    jobs, extver_offset = [], 0
    for position, image in enumerate(images):
        for start in range(0, count, chunk):
            members = tuple(order[start:start + chunk])
            task = ImageTask(image.path, image.hdu,
                             tuple(targets.regions[i] for i in members), pad=args.pad)
            jobs.append(Job(task, position, image.label,
                            tuple(targets.names[i] for i in members), members, Path(args.out),
                            args.output_format in ("fits", "both"), preview, staging,
                            extver_offset, rgb_staging))
        extver_offset += image.lookup_extvers
    return jobs


def _merge_single_files(staging: Path, out_dir: Path, targets: Targets) -> dict[int, Path]:
    """Join each target's extension parts (in image order) behind an empty primary HDU."""
    from vo_service.engine.writing import card

    merged = {}
    for folder in sorted(staging.iterdir()):
        target = int(folder.name)
        region = targets.regions[target]
        primary = empty_primary_bytes([
            card("OBJECT", targets.names[target], "target name"),
            card("RA_OBJ", region.ra, "target RA (ICRS deg)"),
            card("DEC_OBJ", region.dec, "target Dec (ICRS deg)"),
        ])
        parts = [part.read_bytes() for part in sorted(folder.glob("*.part"))]
        merged[target] = atomic_write(out_dir / f"{targets.names[target]}.fits",
                                      [primary, *parts])
    return merged


def _write_composites(rgb_staging: Path, out_dir: Path, targets: Targets,
                      args: argparse.Namespace) -> tuple[int, list[str]]:
    """One colour composite per target cut from all three images; (made, problems)."""
    fmt = "jpeg" if args.output_format == "jpeg" else "png"
    made, problems = 0, []
    for folder in sorted(rgb_staging.iterdir()):
        name = targets.names[int(folder.name)]
        planes = [folder / f"{position}.npy" for position in range(3)]
        if not all(plane.exists() for plane in planes):
            problems.append(f"{name}: not in all three images, no colour composite")
            continue
        try:
            image_bytes = render_composite(*(np.load(plane) for plane in planes), fmt=fmt,
                                           size=args.preview_size)
        except CompositeError as error:
            problems.append(f"{name}: {error}")
            continue
        suffix = "jpg" if fmt == "jpeg" else "png"
        atomic_write(out_dir / f"{name}_rgb.{suffix}", [image_bytes])
        made += 1
    return made, problems


class Progress:
    """A plain-text progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = max(total, 1), 0, enabled
        self.tty = sys.stderr.isatty()
        self.step = 2 if self.tty else 10
        self.shown = -self.step

    def advance(self, count: int) -> None:
        self.done += count
        percent = 100 * self.done // self.total
        if self.enabled and (percent >= self.shown + self.step or self.done >= self.total):
            self.shown = percent
            bar = "#" * (percent // 4)
            line = f"cutting [{bar:<25}] {percent:3d}% ({self.done}/{self.total} stamps)"
            sys.stderr.write(f"\r{line}" if self.tty else f"{line}\n")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def _report(outcomes: list[Outcome], images: list[Image], targets: Targets) -> tuple[int, int]:
    """Print the summary; returns (stamps made, errors)."""
    statuses = [outcome.status for outcome in outcomes]
    made = (statuses.count(StampStatus.OK) + statuses.count(StampStatus.PARTIAL)
            + statuses.count(StampStatus.STITCHED))
    errors = [o for o in outcomes if o.status == StampStatus.ERROR]
    for outcome in errors[:10]:
        print(f"error: {targets.names[outcome.target]} on {images[outcome.image].label}: "
              f"{outcome.message}", file=sys.stderr)
    for name, reason in list(targets.skipped.items())[:10]:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for hidden, what in ((len(errors) - 10, "errors"), (len(targets.skipped) - 10, "skips")):
        if hidden > 0:
            print(f"... and {hidden} more {what}", file=sys.stderr)
    stitched = statuses.count(StampStatus.STITCHED)
    summary = (f"{made} cutouts made, {statuses.count(StampStatus.PARTIAL)} partial, "
               + (f"{stitched} stitched, " if stitched else "")
               + f"{statuses.count(StampStatus.NO_OVERLAP)} no overlap, {len(errors)} errors")
    if targets.skipped:
        summary += f", {len(targets.skipped)} catalog rows skipped"
    print(summary)
    return made, len(errors)


def run_cutout_command(args: argparse.Namespace) -> int:
    """Run ``vo-service cutout``; returns the exit status (0 ok, 1 failures, 2 bad input)."""
    try:
        preview = preview_options(args)
        images = find_images(args.files, args.hdu)
        targets = read_targets(args)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
    except (UsageProblem, OSError) as error:
        print(f"vo-service cutout: error: {error}", file=sys.stderr)
        return 2
    if args.rgb and len(images) != 3:
        print(f"vo-service cutout: error: --rgb needs exactly three images (red, green, blue), "
              f"got {len(images)}: {', '.join(image.label for image in images)}",
              file=sys.stderr)
        return 2
    if args.stitch:
        return _run_stitched(images, targets, args, preview, out_dir)
    single = args.single_file and args.output_format in ("fits", "both")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir)) if single else None
    rgb_staging = Path(tempfile.mkdtemp(prefix=".rgb-", dir=out_dir)) if args.rgb else None
    jobs = _jobs(images, targets, args, preview, staging, rgb_staging)
    composites: tuple[int, list[str]] | None = None
    progress = Progress(len(targets.regions) * len(images), enabled=not args.quiet)
    outcomes: list[Outcome] = []
    try:
        for _, job_outcomes in run_tasks(jobs, run_job, workers=args.workers,
                                         processes=args.workers > 1):
            outcomes.extend(job_outcomes)
            progress.advance(len(job_outcomes))
        progress.finish()
        if staging is not None and staging.exists():
            _merge_single_files(staging, out_dir, targets)
        if rgb_staging is not None:
            composites = _write_composites(rgb_staging, out_dir, targets, args)
    finally:
        _IMAGES.close()
        for folder in (staging, rgb_staging):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    made, errors = _report(outcomes, images, targets)
    if composites is not None:
        for problem in composites[1][:10]:
            print(f"colour: {problem}", file=sys.stderr)
        print(f"{composites[0]} colour composites made")
    if made:
        print(f"written to {out_dir}")
    return 1 if errors or not made else 0


def _run_stitched(images: list[Image], targets: Targets, args: argparse.Namespace,
                  preview: PreviewOptions | None, out_dir: Path) -> int:
    """``--stitch``: one stamp per target and mosaic (mosaic_commands.py)."""
    if args.single_file or args.rgb:
        print("vo-service cutout: error: --stitch makes one stamp per target and mosaic; "
              "it cannot be combined with --single-file or --rgb", file=sys.stderr)
        return 2
    from vo_service.mosaic_commands import stitched_outcomes

    outcomes = [Outcome(*outcome) for outcome in stitched_outcomes(images, targets, args,
                                                                  preview, out_dir)]
    made, errors = _report(outcomes, images, targets)
    if made:
        print(f"written to {out_dir}")
    return 1 if errors or not made else 0
