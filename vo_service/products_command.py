"""The ``vo-service psf`` and ``vo-service catalog-rows`` sub-commands.

``psf``: the PSF at a position from PSF files given as arguments, or, without files, from
every PSF product of the archive index (``--state-dir``) that covers it (``--band``,
``--collection``, ``--instrument`` choose); ``--method interpolated`` interpolates between
the grid PSFs around it. ``catalog-rows``: the rows of catalog files (or the archive's
catalogs covering the position) inside a stamp of ``--size`` on the matching image
(``--reference`` with files). Each writes FITS files into ``--out`` and prints one line per
file. Exit status: 0 when something was written, 1 when nothing covers the position, 2 on
bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vo_service.catalogs.columns import parse_angle

__all__ = ["add_catalog_rows_arguments", "add_psf_arguments", "run_catalog_rows_command",
           "run_psf_command"]


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("files", nargs="*", type=Path,
                        help=f"{what} files (default: the archive index of --state-dir)")
    parser.add_argument("--ra", required=True, help="target RA: degrees or sexagesimal hours")
    parser.add_argument("--dec", required=True, help="target Dec: degrees or sexagesimal")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder")
    parser.add_argument("--data-root", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help="state directory holding the archive index")


def add_psf_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vo-service psf``."""
    _common(parser, "PSF")
    parser.add_argument("--method", default="nearest", choices=("nearest", "interpolated"),
                        help="the nearest grid PSF (default) or interpolated between the "
                             "three around the position")
    for name in ("collection", "instrument", "band"):
        parser.add_argument(f"--{name}", action="append", default=[],
                            help=f"archive PSFs of this {name} (repeatable)")


def add_catalog_rows_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vo-service catalog-rows``."""
    _common(parser, "catalog")
    parser.add_argument("--size", type=float, default=64.0, help="stamp side (default 64)")
    parser.add_argument("--unit", default="pix", choices=("pix", "arcsec", "arcmin", "deg"),
                        help="unit of --size (default pix)")
    parser.add_argument("--columns", default="",
                        help="comma-separated columns to keep (default: all)")
    parser.add_argument("--band", help="place the rows on the stamp of this band's image")
    parser.add_argument("--reference", type=Path,
                        help="with catalog files: the image whose stamp is the footprint")


def _problem(command: str, message: str) -> int:
    print(f"vo-service {command}: {message}", file=sys.stderr)
    return 2


def _position(args: argparse.Namespace) -> tuple[float, float]:
    return parse_angle(args.ra, is_ra=True), parse_angle(args.dec, is_ra=False)


def run_psf_command(args: argparse.Namespace, settings) -> int:  # noqa: ANN001
    """Run ``vo-service psf``; returns the exit status."""
    from vo_service.products.api import psf
    from vo_service.products.product_options import ProductError

    try:
        target = _position(args)
        source = ({"files": args.files} if args.files
                  else {"index": settings.index_path})
        written = psf(target, method=args.method, band=args.band or None,
                      collection=args.collection or None,
                      instrument=args.instrument or None, output_dir=args.out, **source)
    except (ValueError, OSError, ProductError) as exc:
        return _problem("psf", str(exc))
    if not written:
        print(f"no PSF product covers {target[0]:.6f} {target[1]:.6f}", file=sys.stderr)
        return 1
    from astropy.io import fits

    for path in written:
        header = fits.getheader(path)
        distance = header.get("PSFDIST")
        where = f" {distance:.2f} arcsec from the grid PSF" if distance is not None else ""
        print(f"{path}: {header.get('FILTER', '')} {header['PSFMETH']}{where}".replace("  ", " "))
    return 0


def run_catalog_rows_command(args: argparse.Namespace, settings) -> int:  # noqa: ANN001
    """Run ``vo-service catalog-rows``; returns the exit status."""
    import astropy.units as u

    from vo_service.products.api import catalog_rows
    from vo_service.products.product_options import ProductError, parse_columns

    try:
        target = _position(args)
        size = args.size if args.unit == "pix" else args.size * u.Unit(args.unit)
        source = ({"files": args.files, "reference": args.reference} if args.files
                  else {"index": settings.index_path, "band": args.band})
        written = catalog_rows(target, size, columns=parse_columns([args.columns]),
                               output_dir=args.out, **source)
    except (ValueError, OSError, ProductError) as exc:
        return _problem("catalog-rows", str(exc))
    if not written:
        print(f"no catalog covers {target[0]:.6f} {target[1]:.6f}", file=sys.stderr)
        return 1
    from astropy.io import fits

    for path in written:
        print(f"{path}: {fits.getheader(path, 1)['NAXIS2']} rows")
    return 0
