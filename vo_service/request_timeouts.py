"""Closing requests whose headers or body stall, so that half-sent requests cannot pile up.

uvicorn closes idle keep-alive connections but has no read timeout of its own: a client that
sends half a request head, or stops in the middle of a body, would hold its connection (and
a task) for ever. Two limits close them (``[limits]`` in the settings):

- ``header_timeout_seconds``: the whole request head (request line and headers) must
  arrive within this time of the connection opening or of its first byte; otherwise the
  server answers ``408`` (when part of a head came) and closes the connection. This lives
  in the HTTP protocol (:class:`HeaderTimeoutProtocol`, uvicorn's h11 protocol with a
  timer), because no request exists yet for the application to see.
- ``body_timeout_seconds``: while the application reads a request body, no pause between
  two pieces may last longer; otherwise the request ends with a ``408`` DALI error and the
  connection is closed (:class:`BodyTimeoutMiddleware`, an ASGI middleware timing each
  ``receive``). A slow but steady upload is never cut.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import anyio
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from vo_service.config import Settings
from vo_service.protocols.dali import VOTABLE_MIME, UsageError, error_votable, votable_bytes

log = logging.getLogger(__name__)


class RequestTimeout(UsageError):
    """A client stopped sending its request: 408, and the connection is closed."""

    status = 408

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


# -- the request head: in the HTTP protocol -------------------------------------------


def _timeout_answer(seconds: float) -> bytes:
    """A complete ``408`` HTTP/1.1 response with a DALI error VOTable, closing the connection."""
    error = RequestTimeout(f"the request line and headers did not arrive within {seconds:g} s;"
                           " send the whole request head at once")
    body = votable_bytes(error_votable(error.text))
    head = ("HTTP/1.1 408 Request Timeout\r\n"
            f"Content-Type: {VOTABLE_MIME}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection whose request head stalls.

    A timer runs whenever the connection waits for a request head: from the connection's
    start, and from the first byte of each later request (between requests, uvicorn's own
    keep-alive timeout applies). It stops once the head is complete.
    """

    def __init__(self, *args: Any, header_timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_request_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _watch_request_head(self) -> None:
        """Run the timer while a request head is awaited, stop it once one has come."""
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self._stop_header_timer()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._head_stalled)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _head_stalled(self) -> None:
        self._header_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        partial_head = self.conn.trailing_data[0]
        if partial_head:  # a bare idle connection is closed without a word, as by keep-alive
            log.info("closing %s: the request head stalled for %g s (%d bytes came)",
                     self.client, self.header_timeout, len(partial_head))
            self.transport.write(_timeout_answer(self.header_timeout))
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``/``uvicorn.run`` that apply the header timeout.

    A ``functools.partial`` of a module-level class stays picklable for uvicorn's worker
    processes.
    """
    protocol = functools.partial(HeaderTimeoutProtocol,
                                 header_timeout=settings.limits.header_timeout_seconds)
    return {"http": protocol}


# -- the request body: in the application -------------------------------------------


class BodyTimeoutMiddleware:
    """ASGI middleware: a pause longer than ``seconds`` while the application waits for the
    request body raises :class:`RequestTimeout` (a 408 DALI error; the connection closes).

    Only waits for the body are timed: once the body is complete, or the answer has started
    (an endpoint that does not read the body), ``receive`` is passed through untouched, so
    waits for a client's disconnect during a long response are not cut.
    """

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = answered = False

        async def receive_in_time() -> dict:
            nonlocal body_complete
            if body_complete or answered:
                return await receive()
            with anyio.move_on_after(self.seconds) as waited:
                message = await receive()
            if waited.cancelled_caught:
                log.info("closing %s: the request body stalled for %g s", scope.get("client"),
                         self.seconds)
                raise RequestTimeout(
                    f"the request body stalled: nothing arrived for {self.seconds:g} s; send "
                    "the body without pauses")
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        async def send_noting_answer(message: dict) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        await self.app(scope, receive_in_time, send_noting_answer)
