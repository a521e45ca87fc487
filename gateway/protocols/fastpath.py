"""The inference routes, dispatched without FastAPI's per-request machinery.

FastAPI's routing, dependency solving and parameter validation cost about 200 us a request on
this project's machines, more than half of the gateway's own work on a small model (see
docs/benchmarks.md). The inference routes take only path segments and the raw body, so this pure
ASGI layer matches them with the route table's patterns (``routes.ROUTES``, Starlette's own
compiled patterns of the very paths the FastAPI routes declare) and calls the same pipeline the
FastAPI routes call. Everything else goes on: to the request-ID and metrics layers, then FastAPI.

A request it answers gets here what those layers and FastAPI's error middleware would give it,
without their per-request wrappers: its request ID (``requestid.begin``, and the ``X-Request-ID``
header on the answer), its metrics (``instrument.inflight_of`` and ``observe``, with the answer's
status), a GatewayError's answer (the function FastAPI's handler calls), and for an unexpected
exception the app's 500 answer, after which the exception goes on to the server's log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.errors import GatewayError
from gateway.protocols.common import error_response
from gateway.protocols.instrument import inflight_of, observe
from gateway.protocols.pipeline import serve
from gateway.protocols.routes import match
from gateway.requestid import REQUEST_ID, begin

#: The app's handler of unexpected exceptions (FastAPI's ``exception_handlers[Exception]``).
Unexpected = Callable[[Request, Any], Response | Awaitable[Response]]


class InferenceRoutes:
    """Serves POSTs to the inference paths directly; passes every other request on."""

    def __init__(self, app: ASGIApp, unexpected: Unexpected | None = None) -> None:
        self.app = app
        self.unexpected = unexpected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, params = found
        request_id, token = begin(scope)
        protocol = route.codec.protocol  # what protocol_of(path) gives (tests/protocols/test_fastpath.py)
        inflight = inflight_of(protocol)
        inflight.inc()
        start = time.perf_counter()
        status = 500
        request = Request(scope, receive)
        failure: Exception | None = None
        try:
            try:
                response = await serve(request, route.codec, params)
            except GatewayError as exc:
                response = error_response(request, exc)
            except Exception as exc:
                if self.unexpected is None:
                    raise
                failure = exc  # answered with the app's 500, then on to the server's log
                answer = self.unexpected(request, exc)
                response = answer if isinstance(answer, Response) else await answer
            response.raw_headers.append((b"x-request-id", request_id.encode()))
            status = response.status_code
            if failure is None:
                await response(scope, receive, send)
            else:
                with contextlib.suppress(Exception):
                    await response(scope, receive, send)
                raise failure
        finally:
            REQUEST_ID.reset(token)
            elapsed = time.perf_counter() - start
            inflight.dec()
            observe(scope.setdefault("state", {}), protocol, str(status), elapsed)
