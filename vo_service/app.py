"""The Starlette application: routes to the protocol handlers, shared state, error handling.

Shared state on ``app.state``: ``settings``, ``index`` (ArchiveIndex), ``cache``
(CutoutCache), ``job_service`` (UWS), ``started`` (for VOSI), ``vo_resources`` (the
capabilities to declare). Every error reaches the client as a DALI error VOTable; an
exception that is not a :class:`~vo_service.protocols.dali.DALIError` is a logged 500.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from vo_service.archive.index import ArchiveIndex
from vo_service.cache import CutoutCache
from vo_service.config import Settings
from vo_service.cors import DALICORSMiddleware
from vo_service.jobs.reserve import SpaceReserve
from vo_service.protocols import (
    coverage,
    dali,
    datalink,
    examples,
    sia,
    soda,
    tap,
    tap_examples,
    uws,
    vosi,
)
from vo_service.protocols.auth import BearerAuthMiddleware, load_token_owners
from vo_service.request_timeouts import BodyTimeoutMiddleware
from vo_service.web.routes import routes as web_routes
from vo_service.web.sky import routes as sky_routes

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent / "web"
GET_POST = ["GET", "POST"]
templates = Jinja2Templates(directory=WEB_DIR / "templates")
# (facet of ArchiveIndex.facet_counts, column title, SIA parameter) shown on the front page
PAGE_FACETS = (
    ("collections", "Collection", "COLLECTION"),
    ("facilities", "Facility", "FACILITY"),
    ("instruments", "Instrument", "INSTRUMENT"),
    ("bands", "Band", "BANDNAME"),
    ("product_types", "Product type", "PRODUCTTYPE"),
    ("dataproduct_types", "Data product type", "DPTYPE"),
)


def _archive_summary(index: ArchiveIndex) -> tuple[int, list[dict[str, object]]]:
    counts = index.facet_counts()
    facets = [{"key": key.replace("_", "-"), "title": title, "param": param,
               "values": counts.get(key, [])} for key, title, param in PAGE_FACETS]
    return index.count(), facets


async def index_page(request: Request) -> Response:
    """GET ``/``: what the archive holds and where the VO endpoints are (a first web page)."""
    index = request.app.state.index
    total, facets = await run_in_threadpool(_archive_summary, index)
    record = await run_in_threadpool(tap_examples.example_record, index)
    return templates.TemplateResponse(request, "index.html", {
        "total": total, "facets": facets, "base": dali.public_base_url(request),
        "tap_examples": tap_examples.example_queries(record)})


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 and friends as DALI error documents."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"there is no resource at {request.url.path}; see {request.base_url}capabilities"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        if exc.headers and "allow" in {k.lower() for k in exc.headers}:
            message += f"; use {next(v for k, v in exc.headers.items() if k.lower() == 'allow')}"
    else:
        message = str(exc.detail)
    error = dali.UsageError(message, status=exc.status_code, headers=exc.headers)
    return dali.error_response(error)


def create_app(settings: Settings, *, sweep_cache: bool = True) -> Starlette:
    """The vo-service web application over the index at ``settings.index_path``.

    ``sweep_cache=False``: one of several server processes, whose parent has already swept
    the cutout cache (see ``vo_service.serving``).
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    SpaceReserve.of_state(settings).release_if_full()  # room to open the databases
    index = ArchiveIndex(settings.index_path)
    cache = CutoutCache(settings.cache_dir, settings.limits.cache_bytes,
                        min_free_bytes=settings.limits.cache_min_free_bytes, sweep=sweep_cache)
    job_service = uws.create_job_service(settings, index, cache)
    token_owners = load_token_owners(settings)  # None: no authentication

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.started = datetime.now(UTC).replace(microsecond=0)
        await job_service.start()
        try:
            yield
        finally:
            app.state.draining = True
            await job_service.stop()

    routes = [
        Route("/", index_page, methods=["GET"], name="index"),
        Route("/capabilities", vosi.capabilities, methods=["GET"]),
        Route("/availability", vosi.availability, methods=["GET"]),
        Route("/examples", examples.examples_page, methods=["GET"]),
        Route("/query", sia.query_endpoint, methods=GET_POST),
        Route("/links", datalink.links_endpoint, methods=GET_POST),
        Route("/files/{token}", datalink.file_endpoint, methods=["GET"]),
        Route("/preview", datalink.preview_endpoint, methods=["GET"]),
        Route("/sync", soda.sync_endpoint, methods=GET_POST),
        *coverage.routes(),  # /coverage (MOC), /footprints (region files)
        # The job list itself without the trailing slash: pyvo posts to ".../async".
        Route("/async", uws.job_list, methods=GET_POST),
        Mount("/async", routes=uws.routes()),
        *tap.routes(),  # TAP 1.1 at /tap (sync, async, tables, capabilities, examples)
        *web_routes(),  # JSON/PNG helpers of the web page
        *sky_routes(),  # the page's sky view and SAMP hand-off
        Mount("/static", StaticFiles(directory=WEB_DIR / "static", check_dir=False),
              name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # CORS (any origin, see vo_service.cors) comes first so that preflight requests
        # need no token.
        middleware=[Middleware(DALICORSMiddleware),
                    Middleware(BearerAuthMiddleware, owners=token_owners),
                    Middleware(dali.StorageFailureMiddleware),
                    Middleware(BodyTimeoutMiddleware,
                               seconds=settings.limits.body_timeout_seconds)],
        exception_handlers={
            dali.DALIError: dali.dali_exception_handler,
            HTTPException: http_error,
            Exception: dali.server_error_handler,
        },
    )
    app.state.settings = settings
    app.state.index = index
    app.state.cache = cache
    app.state.job_service = job_service
    app.state.started = datetime.now(UTC).replace(microsecond=0)
    app.state.draining = False
    app.state.vo_resources = list(vosi.FRAGMENTS)
    app.state.auth_required = token_owners is not None
    return app
