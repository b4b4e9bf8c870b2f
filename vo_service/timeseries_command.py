"""The ``vo-service timeseries`` sub-command: one target across every epoch.

Epochs come from local FITS files given as arguments, or, without files, from the
archive index of the configured state directory (``vo-service index`` builds it), filtered
by ``--collection``, ``--instrument``, ``--band``, ``--product-type`` and ``--time``.
Writes into ``--out`` (a folder): the stack (``<name>_stack.fits``), on request the aligned
cube (``--cube``: ``<name>_cube.fits``) and the light curve (``--lightcurve``:
``<name>_lightcurve.xml`` and ``.png``), and prints one line per epoch.

Exit status: 0 when at least one epoch has a stamp, 1 when none has, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vo_service.catalogs.columns import parse_angle

__all__ = ["add_timeseries_arguments", "run_timeseries_command"]


def add_timeseries_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-command's arguments."""
    parser.add_argument("files", nargs="*", type=Path,
                        help="FITS files (default: the archive index of --state-dir)")
    parser.add_argument("--ra", help="target RA: degrees or sexagesimal hours")
    parser.add_argument("--dec", help="target Dec: degrees or sexagesimal")
    parser.add_argument("--ephemeris", type=Path,
                        help="a moving target: VOTable, FITS table or CSV of time, RA, Dec")
    parser.add_argument("--fixed", nargs=2, metavar=("RA", "DEC"),
                        help="with --ephemeris, also cut this fixed position at every epoch")
    parser.add_argument("--size", type=float, default=64.0, help="stamp side (default 64)")
    parser.add_argument("--unit", default="pix", choices=("pix", "arcsec", "arcmin", "deg"),
                        help="unit of --size (default pix)")
    for name in ("collection", "instrument", "band", "product-type"):
        parser.add_argument(f"--{name}", action="append", default=[],
                            help=f"archive images of this {name.replace('-', ' ')} "
                                 "(repeatable)")
    parser.add_argument("--time", nargs=2, type=float, metavar=("START", "END"),
                        help="only epochs overlapping this MJD interval")
    parser.add_argument("--cube", action="store_true",
                        help="also write the cube aligned on the first full epoch (reproject)")
    parser.add_argument("--method", default="bilinear", choices=("bilinear", "exact"),
                        help="resampling of the cube (default bilinear)")
    parser.add_argument("--lightcurve", action="store_true",
                        help="also write the light curve (VOTable and PNG)")
    parser.add_argument("--aperture", type=float, default=1.0,
                        help="aperture radius in arcsec (default 1)")
    parser.add_argument("--annulus", nargs=2, type=float, metavar=("INNER", "OUTER"),
                        help="background annulus radii in arcsec (default 2x, 3x aperture)")
    parser.add_argument("--pad", action="store_true",
                        help="pad stamps cut by an image edge to the full size")
    parser.add_argument("--name", help="file name stem (default: from the position)")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder")
    parser.add_argument("--data-root", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help="state directory holding the archive index")


def _problem(message: str) -> int:
    print(f"vo-service timeseries: {message}", file=sys.stderr)
    return 2


def run_timeseries_command(args: argparse.Namespace, settings) -> int:  # noqa: ANN001
    """Run the sub-command; returns the exit status."""
    from vo_service import timeseries_api
    from vo_service.catalogs.ephemerides import EphemerisError, read_ephemeris
    from vo_service.products.timeseries import SeriesError

    try:
        target = None
        if args.ra is not None or args.dec is not None:
            if args.ra is None or args.dec is None:
                return _problem("give both --ra and --dec")
            target = (parse_angle(args.ra, is_ra=True), parse_angle(args.dec, is_ra=False))
        ephemeris = read_ephemeris(args.ephemeris) if args.ephemeris else None
        fixed = ((parse_angle(args.fixed[0], is_ra=True),
                  parse_angle(args.fixed[1], is_ra=False)) if args.fixed else None)
    except (ValueError, EphemerisError, OSError) as exc:
        return _problem(str(exc))
    if target is None and ephemeris is None:
        return _problem("give --ra and --dec, or --ephemeris")
    source: dict[str, object] = {"files": args.files} if args.files else {}
    if not args.files:
        if not settings.index_path.exists():
            return _problem(f"no archive index at {settings.index_path}: run "
                            "'vo-service index' first, or give FITS files")
        source = {"index": settings.index_path}
    choice = {"collection": args.collection or None, "instrument": args.instrument or None,
              "band": args.band or None, "product_type": args.product_type or None}
    if args.files and any(choice.values()):
        return _problem("--collection, --instrument, --band and --product-type choose "
                        "archive images; with files every file is an epoch")
    import astropy.units as u

    size = args.size if args.unit == "pix" else args.size * u.Unit(args.unit)
    stem = args.name or (f"ts_{target[0]:.6f}_{target[1]:.6f}" if target else
                         f"ts_{args.ephemeris.stem}")
    args.out.mkdir(parents=True, exist_ok=True)
    common = {**source, **choice, "time": tuple(args.time) if args.time else None,
              "ephemeris": ephemeris}
    try:
        stack_path = timeseries_api.time_series(target, size, **common, fixed=fixed,
                                                pad=args.pad,
                                                output=args.out / f"{stem}_stack.fits")
        written = [stack_path]
        if args.cube:
            written.append(timeseries_api.time_series(
                target, size, **common, cube=True, method=args.method,
                output=args.out / f"{stem}_cube.fits"))
        if args.lightcurve:
            annulus = tuple(args.annulus) if args.annulus else (2 * args.aperture,
                                                                3 * args.aperture)
            curve = timeseries_api.light_curve(target, **common, aperture=args.aperture,
                                               annulus=annulus,
                                               plot=args.out / f"{stem}_lightcurve.png")
            curve.write(args.out / f"{stem}_lightcurve.xml", format="votable",
                        overwrite=True)
            written += [args.out / f"{stem}_lightcurve.xml",
                        args.out / f"{stem}_lightcurve.png"]
    except (SeriesError, ValueError, OSError) as exc:
        return _problem(str(exc))
    from astropy.io import fits

    with fits.open(stack_path) as stack:
        table = stack["EPOCHS"].data
        for row in table:
            time = "unknown" if row["T_MID"] != row["T_MID"] else f"{row['T_MID']:.5f}"
            print(f"epoch {row['EPOCH']:4d} {row['KIND']:<6} MJD {time:>12} "
                  f"{row['STATUS']:<10} {row['IMAGE_ID']} {row['MESSAGE']}".rstrip())
        stamps = int(stack[0].header["NSTAMPS"])
    for path in written:
        print(f"wrote {path}")
    if stamps == 0:
        print("no epoch has a stamp of the target", file=sys.stderr)
        return 1
    return 0
