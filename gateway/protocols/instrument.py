"""Inference metrics, measured the same way for every protocol and both stacks.

A pure ASGI middleware times each inference request from its first byte to its response and
reads what the handler recorded in the request state: where it was routed, how long the backend
took, which error it ended with. Overhead is the request duration minus the backend time, so the
two add up exactly.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics

_PROTOCOLS = (("/v1/models/", "tfserving_rest"), ("/v2/models/", "oip"), ("/predictions/", "torchserve"))


def protocol_of(path: str) -> str | None:
    for prefix, name in _PROTOCOLS:
        if path.startswith(prefix):
            return name
    return None


class InferenceMetrics:
    """Records ``gateway_request_duration_seconds`` and friends for inference requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol = protocol_of(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if protocol is None:
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        inflight = metrics.INFLIGHT.labels(protocol)
        inflight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - start
            inflight.dec()
            _observe(scope.setdefault("state", {}), protocol, str(status), elapsed)


def _observe(state: dict[str, Any], protocol: str, code: str, elapsed: float) -> None:
    route = state.get("route")
    if route is None:
        model, version, label, backend = metrics.UNROUTED, "", "", ""
    else:
        model, version, label, backend = route
    metrics.REQUESTS.labels(model, version, backend, protocol, code).inc()
    metrics.REQUEST_DURATION.labels(model, version, label, backend, protocol, code).observe(elapsed)
    error = state.get("error")
    if error is not None:
        metrics.ERRORS.labels(model, backend, protocol, error).inc()
    backend_seconds = state.get("backend_seconds")
    if backend_seconds is not None and route is not None:
        metrics.BACKEND_DURATION.labels(backend, model, version).observe(backend_seconds)
        metrics.OVERHEAD.labels(backend, model, version).observe(max(elapsed - backend_seconds, 0.0))
