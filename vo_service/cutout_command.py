"""The ``vo-service cutout`` sub-command: stamps from local FITS files, no server needed.

Targets come from ``--ra/--dec`` or a catalog (VOTable, FITS table, CSV/TSV). Every target
is cut from every image HDU with a celestial WCS of every file (or the ``--hdu`` chosen),
written as FITS and/or PNG/JPEG previews. Work is split into (image, chunk of targets)
tasks: each opens its image once and converts all its targets to pixels in one call.

Exit status: 0 when stamps were made without errors, 1 when some cutouts failed or none
could be made (e.g. no target overlaps any image), 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from vo_service.catalogs import CatalogError, parse_angle, read_catalog
from vo_service.engine.batch import ImageTask, iter_cutouts, run_tasks
from vo_service.engine.composite import CompositeError, render_composite
from vo_service.engine.preview import PreviewOptions, physical_pixels
from vo_service.engine.reading import LOOKUP_EXTNAMES, OpenImage
from vo_service.engine.spectral import CutoutError
from vo_service.engine.writing import atomic_write, empty_primary_bytes
from vo_service.shapes import CenterSize, ShapeError

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
MAX_WORKERS = 16
MAX_CHUNK = 200  # targets per task: bounds memory and gives the progress bar steps
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


EXAMPLES = """examples:
  vo-service cutout m42.fits --ra 05:35:17.3 --dec -05:23:28 --size 2 --unit arcmin
  vo-service cutout tiles/ --catalog targets.csv --format both --workers 4 --out stamps
  vo-service cutout i.fits r.fits g.fits --catalog targets.vot --rgb --pad --single-file

exit status: 0 stamps made without errors, 1 some cutouts failed or none could be made,
2 bad input (the message says what to fix)"""


class UsageProblem(Exception):
    """Bad command-line input; the message says what to fix."""


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_WORKERS}, got {value}")
    return value


def add_cutout_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``vo-service cutout``."""
    # argparse takes "-02:20:30" for an option; every value starting with "-<digit>" is a
    # number here (no option name starts with a digit). Private, but stable since 2.7.
    parser._negative_number_matcher = re.compile(r"^-\.?\d")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="FITS images to cut (a directory means every FITS file in it)")
    where = parser.add_argument_group("targets (a position or a catalog)")
    where.add_argument("--ra", help="right ascension: degrees or sexagesimal hours (05:35:17.3)")
    where.add_argument("--dec", help="declination: degrees or sexagesimal (-05:23:28)")
    where.add_argument("--id", dest="target_id", help="name of the --ra/--dec target")
    where.add_argument("--catalog", help="VOTable, FITS table or CSV/TSV file of targets")
    where.add_argument("--ra-column", help="catalog RA column (default: found by UCD or name)")
    where.add_argument("--dec-column", help="catalog Dec column")
    where.add_argument("--id-column", help="catalog ID column (default: row numbers)")
    where.add_argument("--size-column", help="catalog column of per-target sizes")
    where.add_argument("--max-rows", type=int, default=100_000,
                       help="refuse catalogs with more rows (default 100000)")
    box = parser.add_argument_group("stamp")
    box.add_argument("--size", type=float, default=64.0, help="stamp width (default 64)")
    box.add_argument("--height", type=float, help="stamp height (default: --size)")
    box.add_argument("--unit", choices=("pix", "arcsec", "arcmin", "deg"), default="pix",
                     help="unit of --size/--height and of a unitless size column")
    box.add_argument("--hdu", type=int, action="append",
                     help="HDU index to cut (repeatable; default: every image with a sky WCS)")
    box.add_argument("--pad", action="store_true",
                     help="pad stamps at image edges to the full size (NaN or BLANK)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="cutouts", help="output directory (default ./cutouts)")
    out.add_argument("--format", dest="output_format", default="fits",
                     choices=("fits", "png", "jpeg", "both"),
                     help="fits, png, jpeg, or both (FITS + PNG)")
    out.add_argument("--single-file", action="store_true",
                     help="one multi-extension FITS file per target (all images)")
    out.add_argument("--rgb", action="store_true",
                     help="also a Lupton asinh colour composite per target from exactly three "
                          "images, given in the order red, green, blue (use --pad at edges)")
    out.add_argument("--stretch", default="asinh", help="preview stretch: linear, sqrt, log, asinh")
    out.add_argument("--limits", default="zscale",
                     help="preview limits: zscale, minmax or a percentile such as 99.5")
    out.add_argument("--invert", action="store_true", help="previews black on white")
    out.add_argument("--binning", type=int, default=1, help="preview block-average factor")
    out.add_argument("--preview-size", type=int, help="maximum preview side in pixels")
    parser.add_argument("--workers", type=_workers, default=1,
                        help=f"parallel worker processes (1-{MAX_WORKERS}, default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ---- inputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One image HDU to cut, and the file-name part of its stamps."""

    path: Path
    hdu: int
    label: str
    lookup_extvers: int  # EXTVERs its distortion lookup tables use (multi-extension files)


def _fits_files(names: list[str]) -> list[Path]:
    paths: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.name.lower().endswith(FITS_SUFFIXES))
            if not found:
                raise UsageProblem(f"{path} holds no FITS files ({', '.join(FITS_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise UsageProblem(f"{path}: no such file")
    return paths


def _stem(path: Path) -> str:
    """The file name without its FITS suffix (dots inside the name are kept)."""
    name = path.name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _celestial(hdu, hdul) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # FITSFixed/Verify: repaired cards
        try:
            return WCS(hdu.header, fobj=hdul).has_celestial
        except Exception:  # an unparsable WCS is not a sky image
            return False


def _images(paths: list[Path], wanted_hdus: list[int] | None) -> list[Image]:
    images: list[Image] = []
    used_labels: set[str] = set()
    for path in paths:
        try:
            with fits.open(path, lazy_load_hdus=False) as hdul:
                extvers = [int(h.header.get("EXTVER", 1)) for h in hdul
                           if h.name in LOOKUP_EXTNAMES]
                found = []
                for index, hdu in enumerate(hdul):
                    if wanted_hdus is not None and index not in wanted_hdus:
                        continue
                    if (isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)
                            and int(hdu.header.get("NAXIS", 0)) >= 2
                            and hdu.name not in LOOKUP_EXTNAMES and _celestial(hdu, hdul)):
                        found.append(index)
        except Exception as error:  # astropy raises several types for damaged files
            raise UsageProblem(f"{path}: not a readable FITS file ({error})") from None
        if not found:
            which = f"HDU {', '.join(map(str, wanted_hdus))}" if wanted_hdus else "no HDU"
            raise UsageProblem(f"{path}: {which} is an image with a celestial WCS")
        stem = _UNSAFE.sub("_", _stem(path))
        for index in found:
            label = stem if len(found) == 1 else f"{stem}_h{index}"
            if label in used_labels:  # same name in two folders: keep both files' stamps
                number = 2
                while f"{label}_{number}" in used_labels:
                    number += 1
                label = f"{label}_{number}"
            used_labels.add(label)
            images.append(Image(path, index, label, max(extvers, default=0)))
    return images


@dataclass(frozen=True)
class Targets:
    """The targets to cut, in catalog order, and the catalog rows left out."""

    names: list[str]  # unique, safe for file names
    regions: list[CenterSize]
    skipped: dict[str, str]  # target name -> why it was not cut


def _unique_names(ids: list[str]) -> list[str]:
    names, seen = [], set()
    for row, raw in enumerate(ids, start=1):
        name = _UNSAFE.sub("_", raw).strip("._") or f"row{row}"
        if name in seen:
            name = f"{name}_row{row}"
        seen.add(name)
        names.append(name)
    return names


def _targets(args: argparse.Namespace) -> Targets:
    width = args.size
    height = args.height if args.height is not None else args.size
    if not (math.isfinite(width) and width > 0 and math.isfinite(height) and height > 0):
        raise UsageProblem("--size and --height must be positive numbers")
    if args.catalog:
        if args.ra or args.dec:
            raise UsageProblem("give either --ra/--dec or --catalog, not both")
        try:
            catalog = read_catalog(Path(args.catalog), ra_column=args.ra_column,
                                   dec_column=args.dec_column, id_column=args.id_column,
                                   size_column=args.size_column, max_rows=args.max_rows)
        except CatalogError as error:
            raise UsageProblem(str(error)) from None
        names = _unique_names(catalog.ids)
        regions, kept, skipped = [], [], {}
        for row, name in enumerate(names):
            if row in catalog.row_problems:
                skipped[name] = f"row {row + 1}: {catalog.row_problems[row]}"
                continue
            size = catalog.size[row] if catalog.size is not None else math.nan
            size_unit = catalog.size_unit if catalog.size_unit_explicit else args.unit
            w, h, unit = (size, size, size_unit) if math.isfinite(size) else (
                width, height, args.unit)
            regions.append(CenterSize(float(catalog.ra[row]), float(catalog.dec[row]), w, h,
                                      unit))
            kept.append(name)
        return Targets(kept, regions, skipped)
    if not (args.ra and args.dec):
        raise UsageProblem("give a position with --ra and --dec, or a --catalog of targets")
    try:
        ra = parse_angle(args.ra, is_ra=True)
        dec = parse_angle(args.dec, is_ra=False)
        region = CenterSize(ra, dec, width, height, args.unit)
    except (ValueError, ShapeError) as error:
        raise UsageProblem(str(error)) from None
    name = args.target_id or f"{ra:.5f}{dec:+.5f}"
    return Targets(_unique_names([name]), [region], {})


# ---- work ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One image and a chunk of targets; picklable for worker processes."""

    task: ImageTask
    image_position: int
    label: str
    names: tuple[str, ...]
    first_target: int
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
    status: str  # 'ok', 'partial', 'no-overlap' or 'error'
    message: str
    files: tuple[Path, ...] = ()


def _physical(result, header: fits.Header) -> np.ndarray:
    """Preview values of a stamp: integers scaled by BSCALE/BZERO, BLANK pixels as NaN."""
    blank = result.blank if result.blank is not None else header.get("BLANK")
    return physical_pixels(result.data, bscale=float(header.get("BSCALE", 1.0)),
                           bzero=float(header.get("BZERO", 0.0)),
                           blank=None if blank is None else int(blank))


def _write_stamp(job: Job, result, header: fits.Header) -> Outcome:
    target = job.first_target + result.index
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
            np.save(plane, _physical(result, header))
        if job.preview is not None:
            suffix = "jpg" if job.preview.fmt == "jpeg" else "png"
            image_bytes = job.preview.render(_physical(result, header))
            files.append(atomic_write(job.out_dir / f"{stem}.{suffix}", [image_bytes]))
    except (OSError, ValueError) as error:
        return Outcome(target, job.image_position, "error", f"cannot write: {error}",
                       tuple(files))
    return Outcome(target, job.image_position, result.status, result.message, tuple(files))


def run_job(job: Job) -> list[Outcome]:
    """Cut and write every target of one job (module level: runs in worker processes)."""
    outcomes: list[Outcome] = []
    try:
        with OpenImage(job.task.path, job.task.hdu) as image, warnings.catch_warnings():
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
        outcomes += [
            Outcome(job.first_target + i, job.image_position, "error", message)
            for i in range(len(job.task.regions)) if job.first_target + i not in done
        ]
    return outcomes


def _jobs(images: list[Image], targets: Targets, args: argparse.Namespace,
          preview: PreviewOptions | None, staging: Path | None,
          rgb_staging: Path | None) -> list[Job]:
    count = len(targets.regions)
    chunk = max(1, min(MAX_CHUNK, math.ceil(count / (4 * args.workers))))
    jobs, extver_offset = [], 0
    for position, image in enumerate(images):
        for start in range(0, count, chunk):
            task = ImageTask(image.path, image.hdu, tuple(targets.regions[start:start + chunk]),
                             pad=args.pad)
            jobs.append(Job(task, position, image.label,
                            tuple(targets.names[start:start + chunk]), start, Path(args.out),
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


def _preview_options(args: argparse.Namespace) -> PreviewOptions | None:
    if args.output_format == "fits":
        return None
    try:
        return PreviewOptions(fmt="jpeg" if args.output_format == "jpeg" else "png",
                              stretch=args.stretch, limits=args.limits, invert=args.invert,
                              binning=args.binning, size=args.preview_size)
    except ValueError as error:
        raise UsageProblem(f"preview options: {error}") from None


def _report(outcomes: list[Outcome], images: list[Image], targets: Targets) -> tuple[int, int]:
    """Print the summary; returns (stamps made, errors)."""
    statuses = [outcome.status for outcome in outcomes]
    made = statuses.count("ok") + statuses.count("partial")
    errors = [o for o in outcomes if o.status == "error"]
    for outcome in errors[:10]:
        print(f"error: {targets.names[outcome.target]} on {images[outcome.image].label}: "
              f"{outcome.message}", file=sys.stderr)
    for name, reason in list(targets.skipped.items())[:10]:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for hidden, what in ((len(errors) - 10, "errors"), (len(targets.skipped) - 10, "skips")):
        if hidden > 0:
            print(f"... and {hidden} more {what}", file=sys.stderr)
    summary = (f"{made} cutouts made, {statuses.count('partial')} partial, "
               f"{statuses.count('no-overlap')} no overlap, {len(errors)} errors")
    if targets.skipped:
        summary += f", {len(targets.skipped)} catalog rows skipped"
    print(summary)
    return made, len(errors)


def run_cutout_command(args: argparse.Namespace) -> int:
    """Run ``vo-service cutout``; returns the exit status (0 ok, 1 failures, 2 bad input)."""
    try:
        preview = _preview_options(args)
        images = _images(_fits_files(args.files), args.hdu)
        targets = _targets(args)
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
