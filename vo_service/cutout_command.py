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
from vo_service.engine.batch import ImageTask, cut_unit, plan_units, run_tasks
from vo_service.engine.composite import CompositeError, render_composite
from vo_service.engine.cutout import CutoutResult, StampStatus
from vo_service.engine.mosaic import stitched_cutouts
from vo_service.engine.preview import PreviewOptions
from vo_service.engine.reading import OpenImagePool
from vo_service.engine.writing import atomic_write, empty_primary_bytes

__all__ = ["add_cutout_arguments", "run_cutout_command"]

MAX_CHUNK = 200  # targets per task: bounds memory and gives the progress bar steps
# Images opened by this process's jobs, kept for its next chunk of the same image
# (opening and parsing the WCS costs about as much as a hundred small stamps).
_IMAGES = OpenImagePool(size=4)


# ---- work ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What happened to one target on one image."""

    target: int
    image: int
    status: StampStatus
    message: str
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class StampWriter:
    """How every stamp of a run is written (picklable, shipped to worker processes)."""

    out_dir: Path
    write_fits: bool
    preview: PreviewOptions | None
    labels: tuple[str, ...]  # by image position: file-name part and extension name
    extver_offsets: tuple[int, ...]  # by image position: lookup-table EXTVERs (single file)
    staging: Path | None = None  # single-file mode: extension parts are written here first
    rgb_staging: Path | None = None  # --rgb: each stamp's physical values (.npy) go here

    def write(self, unit: ImageTask, result: CutoutResult) -> Outcome:
        """Write one stamp of ``unit`` (FITS, extension part, preview, colour plane)."""
        return self.write_stamp(result, unit.target(result.index), unit.image,
                                unit.stamp_name(result.index).removesuffix(".fits"))

    def write_stamp(self, result: CutoutResult, target: int, image: int, stem: str
                    ) -> Outcome:
        """Write the stamp of ``target`` on image ``image`` as ``stem``.fits/.png/..."""
        if not result.has_stamp:
            return Outcome(target, image, result.status, result.message)
        files: list[Path] = []
        try:
            if self.staging is not None:
                part = self.staging / f"{target:07d}" / f"{image:05d}.part"
                atomic_write(part, result.chunks(primary=False,
                                                 extver_offset=self.extver_offsets[image],
                                                 extname=self.labels[image][:68]))
            elif self.write_fits:
                files.append(result.write(self.out_dir / f"{stem}.fits"))
            if self.rgb_staging is not None:
                plane = self.rgb_staging / f"{target:07d}" / f"{image}.npy"
                plane.parent.mkdir(parents=True, exist_ok=True)
                np.save(plane, result.physical())
            if self.preview is not None:
                suffix = "jpg" if self.preview.fmt == "jpeg" else "png"
                image_bytes = self.preview.render(result.physical())
                files.append(atomic_write(self.out_dir / f"{stem}.{suffix}", [image_bytes]))
        except (OSError, ValueError) as error:
            return Outcome(target, image, StampStatus.ERROR, f"cannot write: {error}",
                           tuple(files))
        return Outcome(target, image, result.status, result.message, tuple(files))


def cut_and_write(unit: ImageTask, writer: StampWriter) -> list[Outcome]:
    """Cut and write every target of one unit (module level: runs in worker processes)."""
    outcomes: list[Outcome] = []
    try:
        with warnings.catch_warnings():
            # repaired header cards and NaN-ridden distortion solutions far off an image
            # are the engine's business; the command reports per-stamp statuses instead
            warnings.simplefilter("ignore", AstropyWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            for result in cut_unit(unit, _IMAGES):
                outcomes.append(writer.write(unit, result))
    except Exception as error:  # one image must not end a long run
        done = {outcome.target for outcome in outcomes}
        outcomes += [Outcome(target, unit.image, StampStatus.ERROR,
                             f"{type(error).__name__}: {error}")
                     for target in map(unit.target, range(len(unit.regions)))
                     if target not in done]
    return outcomes


def _units(images: list[Image], targets: Targets, workers: int, pad: bool) -> list[ImageTask]:
    count = len(targets.regions)
    return plan_units(
        [(image.path, image.hdu) for image in images], targets.regions,
        chunk=max(1, min(MAX_CHUNK, math.ceil(count / (4 * workers)))), pad=pad,
        names=lambda target, image: f"{targets.names[target]}_{images[image].label}.fits")


def _writer(images: list[Image], args: argparse.Namespace, preview: PreviewOptions | None,
            staging: Path | None, rgb_staging: Path | None) -> StampWriter:
    offsets = np.cumsum([0] + [image.lookup_extvers for image in images[:-1]]).tolist()
    return StampWriter(Path(args.out), args.output_format in ("fits", "both"), preview,
                       tuple(image.label for image in images), tuple(offsets), staging,
                       rgb_staging)


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
    units = _units(images, targets, args.workers, args.pad)
    writer = _writer(images, args, preview, staging, rgb_staging)
    composites: tuple[int, list[str]] | None = None
    progress = Progress(len(targets.regions) * len(images), enabled=not args.quiet)
    outcomes: list[Outcome] = []
    try:
        for _, unit_outcomes in run_tasks(units, cut_and_write, workers=args.workers,
                                          processes=args.workers > 1, args=(writer,)):
            outcomes.extend(unit_outcomes)
            progress.advance(len(unit_outcomes))
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
    """``--stitch``: one stamp per target and mosaic, across tile edges
    (`vo_service.engine.mosaic`)."""
    if args.single_file or args.rgb:
        print("vo-service cutout: error: --stitch makes one stamp per target and mosaic; "
              "it cannot be combined with --single-file or --rgb", file=sys.stderr)
        return 2
    writer = _writer(images, args, preview, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        outcomes = [
            writer.write_stamp(result, result.index, position,
                               f"{targets.names[result.index]}_{images[position].label}")
            for position, result in stitched_cutouts(
                [(image.path, image.hdu) for image in images], targets.regions,
                method=args.stitch, pad=args.pad)]
    made, errors = _report(outcomes, images, targets)
    if made:
        print(f"written to {out_dir}")
    return 1 if errors or not made else 0
