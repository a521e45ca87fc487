"""The inference routes, dispatched without FastAPI's per-request machinery.

FastAPI's routing, dependency solving and parameter validation cost about 200 us a request on
this project's machines, more than half of the gateway's own work on a small model (see
docs/benchmarks.md). The inference routes take only path segments and the raw body, so this pure
ASGI layer matches them with one regular expression and calls the very same endpoint functions
the FastAPI routes declare (which still describe them in the OpenAPI document). Everything else
goes on to FastAPI. Errors are answered by the same function as FastAPI's exception handler.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin.auth import require_inference_key
from gateway.errors import GatewayError
from gateway.protocols import oip, tfserving_rest, torchserve
from gateway.protocols.common import error_response

Endpoint = Callable[..., Awaitable[Response]]

# One pattern per POST route, in the order FastAPI tries them; segments are [^/]+ like Starlette's
# path parameters, matched against the decoded path as Starlette does.
_ROUTES: list[tuple[re.Pattern[str], Endpoint]] = [
    (re.compile(pattern), endpoint)
    for pattern, endpoint in (
        (r"/v1/models/(?P<model>[^/]+):predict", tfserving_rest.predict),
        (r"/v1/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+):predict", tfserving_rest.predict_version),
        (r"/v1/models/(?P<model>[^/]+)/labels/(?P<label>[^/]+):predict", tfserving_rest.predict_label),
        (r"/v2/models/(?P<model>[^/]+)/infer", oip.infer),
        (r"/v2/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)/infer", oip.infer_version),
        (r"/predictions/(?P<model>[^/]+)", torchserve.predictions),
        (r"/predictions/(?P<model>[^/]+)/(?P<version>[^/]+)", torchserve.predictions_version),
    )
]


def match(path: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint of an inference path and its path parameters, or None."""
    for pattern, endpoint in _ROUTES:
        found = pattern.fullmatch(path)
        if found is not None:
            return endpoint, found.groupdict()
    return None


class InferenceRoutes:
    """Serves POSTs to the inference paths directly; passes every other request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        endpoint, params = found
        request = Request(scope, receive)
        try:
            await require_inference_key(request)
            response = await endpoint(request=request, **params)
        except GatewayError as exc:
            response = error_response(request, exc)
        await response(scope, receive, send)
