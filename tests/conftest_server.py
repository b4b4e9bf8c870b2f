"""Pytest fixtures serving the real application over HTTP (loaded by tests/conftest.py).

- ``live_server`` (session): the demo archive, indexed into a temporary state dir, served by
  uvicorn on 127.0.0.1:<free port>. ``live_server.base_url`` is the service root, e.g.
  ``pyvo.dal.SIA2Service(live_server.base_url)``; ``live_server.url("links?ID=...")``.
- ``real_live_server`` (session): the same over the real FITS files in
  ``../shared/data/real/fits``.
- ``live_server_factory`` (function): ``live_server_factory(data_root, **settings_changes)``
  starts a private server (e.g. with small ``limits=Limits(...)``), stopped after the test.

Read-only use of the session servers keeps the suite fast; a test that changes state
(jobs, cache limits) should use the factory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server import LiveServer, serve_archive


@pytest.fixture(scope="session")
def live_server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    """The demo archive served over HTTP for the whole session."""
    with serve_archive(demo_archive, tmp_path_factory.mktemp("live-state")) as server:
        yield server


@pytest.fixture(scope="session")
def real_live_server(real_data: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[LiveServer]:
    """The real FITS files (``shared/data/real/fits``) served over HTTP for the session."""
    with serve_archive(real_data / "fits", tmp_path_factory.mktemp("real-state")) as server:
        yield server


@pytest.fixture
def live_server_factory(tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[Callable[..., LiveServer]]:
    """Start private servers: ``live_server_factory(data_root, **settings_changes)``."""
    stack: list = []

    def start(data_root: Path, **changes: object) -> LiveServer:
        context = serve_archive(data_root, tmp_path_factory.mktemp("private-state"), **changes)
        server = context.__enter__()
        stack.append(context)
        return server

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)
