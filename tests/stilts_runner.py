"""Run Debian's STILTS: its validators (``votlint``, ``datalinklint``) on documents the server
wrote, and its clients (``tapquery``) against the server.

Each function takes the path the ``stilts`` fixture (tests/conftest.py) gives: that fixture
fails under CI=true when STILTS is missing and skips elsewhere.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

STILTS_SECONDS = 300


def run(stilts: str, task: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``stilts <task> <arguments>``, its output captured as text (never raises on failure)."""
    return subprocess.run([stilts, task, *arguments], capture_output=True, text=True,
                          timeout=STILTS_SECONDS, check=False)


def votlint(stilts: str, document: Path) -> list[str]:
    """The ERROR and WARNING lines ``stilts votlint`` reports for a VOTable file."""
    completed = run(stilts, "votlint", "validate=true", f"votable={document}")
    lines = (completed.stdout + completed.stderr).splitlines()
    return [line for line in lines if line.startswith(("ERROR", "WARNING"))]


def datalinklint(stilts: str, document: Path) -> list[dict[str, object]]:
    """Every message of ``stilts datalinklint`` on a DataLink document, as dicts with
    ``level`` (INFO, WARNING, ERROR, FAILURE, ...), ``code`` and ``text``."""
    completed = run(stilts, "datalinklint", "format=json", "maxrepeat=1000",
                    f"votable={document}")
    return json.loads(completed.stdout)["sections"]
