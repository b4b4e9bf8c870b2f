"""Shared fixtures: paths to the real FITS data and a demo archive built once per session."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

# Live HTTP server fixtures (live_server, real_live_server, live_server_factory).
pytest_plugins = ["conftest_server"]

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real telescope FITS files (``../shared/data/real``)."""
    if not REAL_DATA.is_dir():
        if IN_CI:
            pytest.fail(f"real data missing at {REAL_DATA}")
        pytest.skip("real data not present")
    return REAL_DATA


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo archive (scale 1) built once for the whole test session."""
    from vo_service.archive.demo import build_demo_archive

    directory = tmp_path_factory.mktemp("demo-archive")
    build_demo_archive(directory)
    return directory


@pytest.fixture(scope="session")
def variable_star(demo_archive: Path) -> dict[str, str]:
    """The demo archive's variable star: its row of ``sources.csv`` (id, ra, dec, ...)."""
    with open(demo_archive / "sources.csv", newline="") as handle:
        (star,) = [row for row in csv.DictReader(handle) if row["variable"] == "1"]
    return star


@pytest.fixture(scope="session")
def stilts() -> str:
    """Path of Debian's ``stilts`` (votlint, datalinklint, taplint); ``make test`` installs it."""
    import shutil

    path = shutil.which("stilts")
    if path is None:
        if IN_CI:
            pytest.fail("stilts is missing: apt-get install stilts (make test does it as root)")
        pytest.skip("stilts not installed")
    return path
