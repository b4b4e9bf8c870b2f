"""Command-line stacking of local files: ``vo-service combine`` (stamps of one position
combined into one image, with a count per pixel). ``vo-service cutout --stitch`` is in
:mod:`vo_service.cutout_command`."""

from __future__ import annotations

import argparse
import sys
import warnings

from astropy.utils.exceptions import AstropyWarning

from vo_service.engine.combine import COMBINE_METHODS, combine_files
from vo_service.engine.resample import DEFAULT_METHOD, METHODS


def add_combine_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vo-service combine``."""
    parser.add_argument("files", nargs="+", metavar="STAMP",
                        help="FITS stamps of one position; the first one's grid is used")
    parser.add_argument("--method", choices=COMBINE_METHODS, default="mean",
                        help="mean (default), median, sum, or ivar (inverse-variance mean: "
                             "needs --rms)")
    parser.add_argument("--rms", nargs="+", metavar="RMS",
                        help="an RMS image per stamp, in the same order (adds an RMS "
                             "extension; needed by --method ivar)")
    parser.add_argument("--resampling", choices=METHODS, default=DEFAULT_METHOD,
                        help="how stamps on other pixel grids are resampled (default interp)")
    parser.add_argument("--out", default="combined.fits",
                        help="output FITS file (default combined.fits)")


def run_combine_command(args: argparse.Namespace) -> int:
    """Run ``vo-service combine``; 0 on success, 2 on bad input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            written = combine_files(args.files, method=args.method, rms=args.rms,
                                    output=args.out, resampling=args.resampling)
    except (OSError, ValueError) as error:
        print(f"vo-service combine: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(args.files)} stamps combined ({args.method}) into {written}")
    return 0
