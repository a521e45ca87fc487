"""The inference routes, dispatched without FastAPI's per-request machinery.

FastAPI's routing, dependency solving and parameter validation cost about 200 us a request on
this project's machines, more than half of the gateway's own work on a small model (see
docs/benchmarks.md). The inference routes take only path segments and the raw body, so this pure
ASGI layer matches them with the route table's patterns (``routes.ROUTES``, Starlette's own
compiled patterns of the very paths the FastAPI routes declare) and calls the same pipeline the
FastAPI routes call. Everything else goes on to FastAPI. Errors are answered by the same function
as FastAPI's exception handler.
"""

from __future__ import annotations

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.errors import GatewayError
from gateway.protocols.common import error_response
from gateway.protocols.pipeline import serve
from gateway.protocols.routes import match


class InferenceRoutes:
    """Serves POSTs to the inference paths directly; passes every other request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, params = found
        request = Request(scope, receive)
        try:
            response = await serve(request, route.codec, params)
        except GatewayError as exc:
            response = error_response(request, exc)
        await response(scope, receive, send)
