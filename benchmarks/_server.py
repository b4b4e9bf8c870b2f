"""Start the service in its own process for a benchmark and wait until it answers.

Shared by ``http_sync.py`` and ``load_test.py``; not a benchmark itself (running it does
nothing).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

STARTUP_SECONDS = 300


def start_server_process(command: list[str], port: int, log_path: Path) -> subprocess.Popen:
    """Run ``command`` (a server on 127.0.0.1:``port``) with its output in ``log_path``;
    return once ``/availability`` answers 200, raise if it exits or never does."""
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/availability", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"the server did not start within {STARTUP_SECONDS} s")
