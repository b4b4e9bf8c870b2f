"""TAP 1.1 at ``<base>/tap``: sync queries, the async job list (UWS), VOSI capabilities,
availability and tables, and DALI examples.

HTTP parameters become a :class:`~vo_service.products.tap_request.TapRequest`; the query runs off
the event loop (:mod:`vo_service.products.tap_results`). SODA owns ``<base>/sync`` and
``<base>/async`` (DESIGN "Paths"), so TAP's resources are the siblings of
``<base>/tap/capabilities`` (TAP 1.1 §2). TAP jobs are the existing UWS machinery
(:mod:`~vo_service.protocols.uws`) routed with ``uws_path=/tap/async`` and ``uws_kind=tap``.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from vo_service.products.tap_request import TapError
from vo_service.products.tap_results import TAP_STANDARD_ID, run_and_write
from vo_service.products.tap_upload import read_tap_request
from vo_service.protocols import tap_examples, uws, vosi
from vo_service.protocols.dali import UsageError, public_base_url, read_params
from vo_service.protocols.vosi_tables import table_document, tableset_document

TAP_PATH = "/tap"
SYNC_SECONDS = 300.0  # longest sync query; async jobs have their EXECUTIONDURATION
XML_MIME = "application/xml"


async def sync_endpoint(request: Request) -> Response:
    """GET/POST ``/tap/sync``: run one ADQL query, answer the result table."""
    request.scope["vo_standard_id"] = TAP_STANDARD_ID
    params = await read_params(request)
    values = {name: params.get_all(name) for name in params.names()}
    files = {upload.name: upload.data for upload in params.files}
    settings = request.app.state.settings
    base = public_base_url(request)

    def work() -> tuple[bytes, str]:
        tap_request = read_tap_request(values, files, settings)
        body = run_and_write(tap_request, settings.index_path, base, seconds=SYNC_SECONDS)
        return body, tap_request.output.content_type

    try:
        body, content_type = await run_in_threadpool(work)
    except TapError as exc:
        raise UsageError(str(exc)) from None
    return Response(body, media_type=content_type)


async def capabilities(request: Request) -> Response:
    """GET ``/tap/capabilities``: the TAP service's own VOSI capabilities."""
    base = public_base_url(request)
    secured = getattr(request.app.state, "auth_required", False)
    body = vosi.capabilities_document(
        f"{base}{TAP_PATH}", vosi.TAP_RESOURCES,
        security_method=vosi.TOKEN_SECURITY_METHOD if secured else None,
        tap_base=f"{base}{TAP_PATH}", values=vosi.capability_values(request.app.state.settings))
    return Response(body, media_type=XML_MIME)


async def tables(request: Request) -> Response:
    """GET ``/tap/tables``: VOSI 1.1 tableset (``detail=min`` leaves out the columns)."""
    detail = (request.query_params.get("detail") or "").lower()
    # astroquery's Tap/TapPlus need esatapplus:flags; they GET with http.client, which sends
    # no User-Agent (every other client we know names itself).
    agent = request.headers.get("user-agent")
    astroquery = agent is None or agent.startswith("astroquery/")
    return Response(tableset_document(with_columns=detail != "min", esa_flags=astroquery),
                    media_type=XML_MIME)


async def one_table(request: Request) -> Response:
    """GET ``/tap/tables/<name>``: one ``vosi:table``."""
    body = table_document(request.path_params["name"])
    if body is None:
        raise UsageError(f"there is no table {request.path_params['name']!r}; see "
                         f"{public_base_url(request)}{TAP_PATH}/tables", status=404)
    return Response(body, media_type=XML_MIME)


async def examples(request: Request) -> Response:
    """GET ``/tap/examples``: DALI examples with TAP's ``query`` and ``table`` properties."""
    record = await run_in_threadpool(tap_examples.example_record, request.app.state.index)
    body = tap_examples.examples_document(public_base_url(request),
                                          tap_examples.example_queries(record))
    return Response(body, media_type="application/xhtml+xml")


async def service_root(request: Request) -> Response:
    """GET ``/tap``: the examples page is the service's human face."""
    return RedirectResponse(f"{public_base_url(request)}{TAP_PATH}/examples", status_code=303)


class TapJobs:
    """ASGI wrapper marking requests for the UWS handlers as TAP's (``/tap/async``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["uws_path"] = f"{TAP_PATH}/async"
            scope["uws_kind"] = "tap"
            scope["vo_standard_id"] = TAP_STANDARD_ID
        await self.app(scope, receive, send)


def routes() -> list[BaseRoute]:
    """Every TAP resource, with absolute paths."""
    jobs = TapJobs(Router(routes=uws.routes()))
    return [
        Route(TAP_PATH, service_root, methods=["GET"]),
        Route(f"{TAP_PATH}/sync", sync_endpoint, methods=["GET", "POST"]),
        Route(f"{TAP_PATH}/capabilities", capabilities, methods=["GET"]),
        Route(f"{TAP_PATH}/availability", vosi.availability, methods=["GET"]),
        Route(f"{TAP_PATH}/tables", tables, methods=["GET"]),
        Route(f"{TAP_PATH}/tables/{{name}}", one_table, methods=["GET"]),
        Route(f"{TAP_PATH}/examples", examples, methods=["GET"]),
        # The job list itself without the trailing slash: pyvo posts to ".../async".
        Route(f"{TAP_PATH}/async", job_list, methods=["GET", "POST"]),
        Mount(f"{TAP_PATH}/async", app=jobs),
    ]


async def job_list(request: Request) -> Response:
    """GET/POST ``/tap/async``: the TAP job list (UWS)."""
    request.scope.update(uws_path=f"{TAP_PATH}/async", uws_kind="tap",
                         vo_standard_id=TAP_STANDARD_ID)
    return await uws.job_list(request)
