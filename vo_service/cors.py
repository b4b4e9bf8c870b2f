"""Cross-origin access (CORS) for browser clients, with refusals as DALI error documents.

Public VO data: browser clients on other sites (Aladin Lite, notebooks) may call every
endpoint; with tokens they send them as an ``Authorization`` header (no cookies). Starlette's
middleware does the work; a preflight it refuses (a method or header the service does not
take) is answered here as a DALI error VOTable that names what to change, like every other
error of the service, instead of a bare ``Disallowed CORS method``.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import SAFELISTED_HEADERS, CORSMiddleware
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from vo_service.products.parameters import shorten
from vo_service.protocols.dali import UsageError, error_response
from vo_service.protocols.error_format import sync_wants_plain_errors

ALLOWED_METHODS = ("GET", "HEAD", "POST", "DELETE")
ALLOWED_HEADERS = ("Authorization",)
EXPOSED_HEADERS = ("Location", "Content-Disposition", "Retry-After", "Last-Modified", "ETag",
                   "WWW-Authenticate")


class DALICORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware for any origin, whose refused preflights are DALI errors."""

    def __init__(self, app, **options) -> None:  # noqa: ANN001, ANN003 - as CORSMiddleware
        options = {"allow_origins": ["*"], "allow_methods": ALLOWED_METHODS,
                   "allow_headers": ALLOWED_HEADERS, "expose_headers": EXPOSED_HEADERS,
                   **options}
        super().__init__(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As CORSMiddleware; a preflight of SODA ``/sync`` is refused in text/plain like
        every other ``/sync`` error (SODA 1.0 §5.2), unless it asks for a VOTable."""
        headers = Headers(scope=scope) if scope["type"] == "http" else Headers()
        if (scope["type"] == "http" and scope["method"] == "OPTIONS" and "origin" in headers
                and "access-control-request-method" in headers):
            plain = sync_wants_plain_errors(scope)
            await self.preflight_response(headers, plain_text=plain)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers, *,
                           plain_text: bool = False) -> Response:
        """The preflight answer; a refusal says which method or headers to drop."""
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        problems = []
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            problems.append(f"the method {shorten(method)!r} is not offered (use "
                            f"{', '.join(self.allow_methods)})")
        requested = [name.strip() for name in
                     request_headers.get("access-control-request-headers", "").split(",")]
        refused = [name for name in requested if name and name.lower() not in self.allow_headers]
        if refused:
            allowed = sorted({*SAFELISTED_HEADERS, *ALLOWED_HEADERS})
            problems.append(f"the header(s) {shorten(', '.join(refused))!r} are not accepted "
                            f"(send only {', '.join(allowed)})")
        if "access-control-request-private-network" in request_headers:
            problems.append("private-network access is not offered")
        if not self.is_allowed_origin(request_headers["origin"]):
            problems.append(f"the origin {shorten(request_headers['origin'])!r} is not allowed")
        cors_headers = {name: value for name, value in answer.headers.items()
                        if name.startswith("access-control-") or name == "vary"}
        error = UsageError("cross-origin request refused: " + "; ".join(problems or [
            "the preflight request was not acceptable"]), headers=cors_headers)
        return error_response(error, plain_text=plain_text)
