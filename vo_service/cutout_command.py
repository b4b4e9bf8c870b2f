"""The ``vo-service cutout`` sub-command (placeholder until the engine lands)."""

from __future__ import annotations

import argparse


def add_cutout_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``vo-service cutout``."""
    parser.add_argument("files", nargs="*", help="FITS files to cut")


def run_cutout_command(args: argparse.Namespace) -> int:
    """Run ``vo-service cutout``."""
    raise SystemExit("vo-service cutout is not available yet")
