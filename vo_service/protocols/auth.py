"""Who is asking: bearer tokens mapped to owner names, checked before any handler runs.

Authentication is off unless tokens are configured (``tokens_file`` and/or
``VO_SERVICE_TOKENS``); then every request is the anonymous owner (``None``). With tokens,
every request must carry ``Authorization: Bearer <token>`` except the VOSI resources
(capabilities and availability must stay anonymous, VOSI 1.1 §2), the DALI examples page
and the web page with its static assets (the page's own API calls carry the token). A
missing or unknown token answers 401 with ``WWW-Authenticate: Bearer realm="vo-service"``
and a DALI error VOTable (``AuthenticationError: ...``; text/plain on SODA ``/sync`` as
every ``/sync`` error), as do two ``Authorization`` headers (no guessing which one counts).

Only sha256 digests of tokens are kept in memory and in the tokens file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from vo_service.config import Settings
from vo_service.protocols.dali import AuthenticationError, error_response
from vo_service.protocols.error_format import sync_wants_plain_errors

CHALLENGE = 'Bearer realm="vo-service"'
# Reachable without a token even when authentication is on.
ANONYMOUS_PATHS = frozenset({"/", "/capabilities", "/availability", "/examples",
                             "/favicon.ico", "/tap/capabilities", "/tap/availability",
                             "/tap/tables", "/tap/examples"})
ANONYMOUS_PREFIXES = ("/static/",)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def token_digest(token: str) -> str:
    """The sha256 hex digest under which a token is configured."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token_list(text: str) -> dict[str, str]:
    """``"owner1:token1,owner2:token2"`` as {digest: owner}; ValueError if malformed."""
    owners: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        owner, colon, token = item.partition(":")
        if not colon or not owner.strip() or not token.strip():
            raise ValueError("VO_SERVICE_TOKENS must be 'owner:token' pairs separated by "
                             f"commas; {item.split(':')[0]!r}... is not")
        owners[token_digest(token.strip())] = owner.strip()
    return owners


def parse_token_file(values: Mapping[str, Any]) -> dict[str, str]:
    """A tokens TOML document ({sha256 hex = "owner"}, optionally under ``[tokens]``)."""
    table = values.get("tokens", values)
    owners: dict[str, str] = {}
    for digest, owner in table.items():
        digest = str(digest).strip().lower()
        if not _DIGEST.match(digest) or not isinstance(owner, str) or not owner.strip():
            raise ValueError(f"tokens file: {digest[:12]!r}... must be a sha256 hex digest "
                             "(64 characters) set to an owner name")
        owners[digest] = owner.strip()
    return owners


def load_token_owners(settings: Settings) -> dict[str, str] | None:
    """{token digest: owner} from the settings, or None when authentication is off."""
    if settings.tokens_file is None and not settings.tokens:
        return None
    owners: dict[str, str] = {}
    if settings.tokens_file is not None:
        with open(settings.tokens_file, "rb") as handle:
            owners.update(parse_token_file(tomllib.load(handle)))
    if settings.tokens:
        owners.update(parse_token_list(settings.tokens))
    if not owners:
        raise ValueError("tokens are configured but none was found; remove the setting to "
                         "run without authentication")
    return owners


def request_owner(request: Request) -> str | None:
    """The owner of a request (None = anonymous, also whenever authentication is off)."""
    return request.scope.get("vo_owner")


def _authorizations(scope: Scope) -> list[str]:
    """Every ``Authorization`` header of the request, in order."""
    return [value.decode("latin-1") for name, value in scope.get("headers", ())
            if name == b"authorization"]


def _bearer(authorization: str | None) -> str | None:
    """The token of a ``Bearer`` credential; "" for another scheme, None without one."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class BearerAuthMiddleware:
    """ASGI middleware setting ``scope["vo_owner"]`` and refusing requests without a token."""

    def __init__(self, app: ASGIApp, owners: dict[str, str] | None) -> None:
        self.app = app
        self.owners = owners

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["vo_owner"] = None
        if self.owners is None:
            await self.app(scope, receive, send)
            return
        authorizations = _authorizations(scope)
        if len(authorizations) > 1:  # which one counts would be the server's guess
            error = AuthenticationError(
                f"the request carries {len(authorizations)} Authorization headers; send "
                "exactly one, 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": CHALLENGE})
            await error_response(error, plain_text=sync_wants_plain_errors(scope))(
                scope, receive, send)
            return
        token = _bearer(authorizations[0] if authorizations else None)
        owner = self.owners.get(token_digest(token)) if token else None
        path = scope.get("path", "/")
        public = path in ANONYMOUS_PATHS or path.startswith(ANONYMOUS_PREFIXES)
        if owner is None and not public:
            if token is None:
                message = ("this service needs a bearer token: send the header "
                           "'Authorization: Bearer <token>' (ask the operators for a token)")
            else:
                message = "the bearer token is not valid; check it or ask for a new one"
            error = AuthenticationError(message, headers={"WWW-Authenticate": CHALLENGE})
            await error_response(error, plain_text=sync_wants_plain_errors(scope))(
                scope, receive, send)
            return
        scope["vo_owner"] = owner
        await self.app(scope, receive, send)
