"""Command-line stitching and stacking of local files: ``vo-service cutout --stitch`` (one
stamp per target and mosaic, across tile edges) and ``vo-service combine`` (stamps of one
position combined into one image, with a count per pixel)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from astropy.utils.exceptions import AstropyWarning

from vo_service.cutout_inputs import Image, Targets
from vo_service.engine.combine import COMBINE_METHODS, combine_files
from vo_service.engine.mosaic import stitched_cutouts
from vo_service.engine.physical import header_scaling, physical_values
from vo_service.engine.preview import PreviewOptions
from vo_service.engine.resample import DEFAULT_METHOD, METHODS
from vo_service.engine.writing import atomic_write


def stitched_outcomes(images: list[Image], targets: Targets, args: argparse.Namespace,
                      preview: PreviewOptions | None, out_dir: Path
                      ) -> list[tuple[int, int, str, str]]:
    """Cut and write one stitched stamp per target and mosaic: (target, image position,
    status, message) per stamp or miss, as ``cutout`` reports them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        results = stitched_cutouts([(image.path, image.hdu) for image in images],
                                   targets.regions, method=args.stitch, pad=args.pad)
    outcomes = []
    for position, result in results:
        if result.has_stamp:
            stem = f"{targets.names[result.index]}_{images[position].label}"
            try:
                if args.output_format in ("fits", "both"):
                    result.write(out_dir / f"{stem}.fits")
                if preview is not None:
                    header = result.to_hdulist()[0].header
                    values = physical_values(result.data, **header_scaling(header))
                    suffix = "jpg" if preview.fmt == "jpeg" else "png"
                    atomic_write(out_dir / f"{stem}.{suffix}", [preview.render(values)])
            except (OSError, ValueError) as error:
                outcomes.append((result.index, position, "error", f"cannot write: {error}"))
                continue
        outcomes.append((result.index, position, result.status, result.message))
    return outcomes


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
