"""Serving the application with uvicorn: one process, or several on one state directory.

With ``settings.workers`` > 1, uvicorn's supervisor binds the socket and starts that many
worker processes, each importing :func:`worker_app`; it restarts any that dies. What must
happen once happens here in the parent before they start (the caller has indexed the data
roots; the cutout cache is swept here). The workers share the SQLite files (WAL mode) and
the cache directory; one of them runs the jobs (``jobs/coordination.py``). Each process
admits ``limits.max_sync_concurrency`` sync cutouts of its own.
"""

from __future__ import annotations

import json
import logging
import os

from starlette.applications import Starlette

from vo_service.config import Settings, settings_from_json, settings_to_json
from vo_service.request_timeouts import uvicorn_options

# The parent hands the settings (as built from file, environment and command line) and
# the log level to its workers in this environment variable (inherited; same user only).
SETTINGS_ENV = "VO_SERVICE_WORKER_SETTINGS"
LOG_FORMAT = "%(levelname)s [%(process)d] %(name)s: %(message)s"  # which worker said it


def worker_app() -> Starlette:
    """The application of one worker process (a uvicorn factory)."""
    from vo_service.app import create_app

    if SETTINGS_ENV not in os.environ:
        raise RuntimeError("worker_app runs in the processes of `vo-service serve --workers N`, "
                           f"which hand it the settings in ${SETTINGS_ENV}")
    handed = json.loads(os.environ[SETTINGS_ENV])
    logging.basicConfig(level=handed["log_level"], format=LOG_FORMAT)
    return create_app(settings_from_json(handed["settings"]), sweep_cache=False)


def serve(settings: Settings, *, log_level: int = logging.INFO, access_log: bool = True) -> None:
    """Serve on ``settings.host``:``settings.port`` until interrupted; ``access_log``: a
    log line per request."""
    import uvicorn

    level = logging.getLevelName(log_level).lower()
    if settings.workers <= 1:
        from vo_service.app import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level=level, access_log=access_log, **uvicorn_options(settings))
        return
    from vo_service.cache import CutoutCache

    CutoutCache(settings.cache_dir, settings.limits.cache_bytes,  # sweeps, once
                min_free_bytes=settings.limits.cache_min_free_bytes).close()
    os.environ[SETTINGS_ENV] = json.dumps(
        {"settings": settings_to_json(settings), "log_level": logging.getLevelName(log_level)})
    uvicorn.run("vo_service.serving:worker_app", factory=True, workers=settings.workers,
                host=settings.host, port=settings.port, log_level=level,
                access_log=access_log, **uvicorn_options(settings))
