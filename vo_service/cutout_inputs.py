"""The inputs of ``vo-service cutout``: its arguments, and the images and targets they name.

:func:`add_cutout_arguments` declares the options; :func:`find_images` and
:func:`read_targets` turn them into the image HDUs to cut and the target regions, raising
:class:`UsageProblem` with a message that says what to fix. Running the cuts and reporting
live in :mod:`vo_service.cutout_command`.
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from vo_service.catalogs import CatalogError, parse_angle, read_catalog
from vo_service.engine.preview import PreviewOptions
from vo_service.engine.reading import LOOKUP_EXTNAMES
from vo_service.engine.resample import DEFAULT_METHOD, METHODS
from vo_service.shapes import CenterSize, ShapeError

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
MAX_WORKERS = 16
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
    box.add_argument(
        "--stitch", nargs="?", const=DEFAULT_METHOD, choices=METHODS,
        help="treat the files as tiles of mosaics (grouped by FILTER, PRODTYPE, BUNIT): one "
             "stamp per target and mosaic, on the grid of the tile holding the target, filled "
             "across tile edges from the other tiles (exact copies on a shared pixel grid; "
             "others resampled: interp, the default, or flux); the SRCMAP extension says "
             "where each pixel came from")


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


def find_images(names: list[str], wanted_hdus: list[int] | None) -> list[Image]:
    """The image HDUs with a celestial WCS in the files (or directories) ``names``."""
    paths = _fits_files(names)
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


def unique_names(ids: list[str]) -> list[str]:
    """File-safe target names, one per ID, all distinct: a repeated (or, once made safe,
    colliding) name gets its row number, then a counter while even that is taken."""
    names: list[str] = []
    seen: set[str] = set()
    for row, raw in enumerate(ids, start=1):
        base = _UNSAFE.sub("_", raw).strip("._") or f"row{row}"
        name, extra = base, 1
        while name in seen:
            name = f"{base}_row{row}" + (f"_{extra}" if extra > 1 else "")
            extra += 1
        seen.add(name)
        names.append(name)
    return names


def read_targets(args: argparse.Namespace) -> Targets:
    """The targets of ``--ra/--dec`` or ``--catalog``, with their stamp sizes."""
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
        names = unique_names(catalog.ids)
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
    return Targets(unique_names([name]), [region], {})


def preview_options(args: argparse.Namespace) -> PreviewOptions | None:
    """The preview rendering asked for, or None for FITS only."""
    if args.output_format == "fits":
        return None
    try:
        return PreviewOptions(fmt="jpeg" if args.output_format == "jpeg" else "png",
                              stretch=args.stretch, limits=args.limits, invert=args.invert,
                              binning=args.binning, size=args.preview_size)
    except ValueError as error:
        raise UsageProblem(f"preview options: {error}") from None
