"""The time-series modules import only down the rooms of DESIGN.md: the engine knows no
index, jobs or HTTP; products know no jobs or protocols; the job kind knows no protocols."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vo_service"
FORBIDDEN = {
    "engine/stack.py": ("archive", "jobs", "protocols", "products", "web", "cache"),
    "engine/stack_fast.py": ("archive", "jobs", "protocols", "products", "web", "cache"),
    "engine/stack_cube.py": ("archive", "jobs", "protocols", "products", "web", "cache"),
    "engine/photometry.py": ("archive", "jobs", "protocols", "products", "web", "cache"),
    "engine/lightcurve_plot.py": ("archive", "jobs", "protocols", "products", "web"),
    "products/timeseries.py": ("jobs", "protocols", "web", "app", "cli"),
    "catalogs/ephemerides.py": ("jobs", "protocols", "web", "products", "engine"),
    "jobs/timeseries_job.py": ("protocols", "web", "app", "cli"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("relative", sorted(FORBIDDEN))
def test_imports_point_down(relative: str) -> None:
    modules = imported_modules(PACKAGE / relative)
    upward = [m for m in modules for room in FORBIDDEN[relative]
              if m == f"vo_service.{room}" or m.startswith(f"vo_service.{room}.")]
    assert not upward, f"{relative} imports {upward}"
