"""Inference metrics, measured the same way for every protocol and both stacks.

A pure ASGI middleware times each inference request from its first byte to its response and
reads what the handler recorded in the request state: where it was routed, how long the backend
took, which error it ended with. Overhead is the request duration minus the backend time, so the
two add up exactly. The inference fast path (``fastpath``), which answers the inference routes in
front of this middleware, records them the same way with ``inflight_of`` and ``observe``.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.protocols.routes import protocol_prefixes

#: (path prefix, protocol) from the route table: a POST under a protocol's prefix is counted under
#: that protocol even when it names no route (a 404 is part of what its clients see).
_PROTOCOLS = protocol_prefixes()


def protocol_of(path: str) -> str | None:
    """The protocol label of an inference path, or None for a path outside every protocol."""
    for prefix, name in _PROTOCOLS:
        if path.startswith(prefix):
            return name
    return None


#: ``gateway_inflight_requests`` of each protocol, looked up once (a few protocols: bounded).
_INFLIGHT: dict[str, Any] = {}


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

        inflight = inflight_of(protocol)
        inflight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - start
            inflight.dec()
            observe(scope.setdefault("state", {}), protocol, str(status), elapsed)


def inflight_of(protocol: str) -> Any:
    """The ``gateway_inflight_requests`` series of ``protocol`` (looked up once)."""
    inflight = _INFLIGHT.get(protocol)
    if inflight is None:
        inflight = _INFLIGHT[protocol] = metrics.INFLIGHT.labels(protocol)
    return inflight


class _Children:
    """The labelled metric children of one (route, protocol, code): looked up once, then reused.

    ``labels()`` costs a lock and a dict lookup per metric; label values are bounded (unknown
    models are not labels), so this cache is too.
    """

    __slots__ = ("backend", "duration", "errors", "overhead", "requests")

    def __init__(self, model: str, version: str, label: str, backend: str, protocol: str, code: str) -> None:
        self.requests = metrics.REQUESTS.labels(model, version, backend, protocol, code)
        self.duration = metrics.REQUEST_DURATION.labels(model, version, label, backend, protocol, code)
        self.backend = metrics.BACKEND_DURATION.labels(backend, model, version) if backend else None
        self.overhead = metrics.OVERHEAD.labels(backend, model, version) if backend else None
        self.errors: dict[str, Any] = {}


_CHILDREN: dict[tuple[str, ...], _Children] = {}


def observe(state: dict[str, Any], protocol: str, code: str, elapsed: float) -> None:
    """Record one inference request of ``protocol`` answered with ``code`` after ``elapsed`` seconds,
    from what the pipeline recorded in ``state`` (the gRPC doors call this too)."""
    route = state.get("route")
    if route is None:
        model, version, label, backend = metrics.UNROUTED, "", "", ""
    else:
        model, version, label, backend = route
    key = (model, version, label, backend, protocol, code)
    children = _CHILDREN.get(key)
    if children is None:
        children = _CHILDREN[key] = _Children(*key)
    children.requests.inc()
    children.duration.observe(elapsed)
    error = state.get("error")
    if error is not None:
        counter = children.errors.get(error)
        if counter is None:
            counter = children.errors[error] = metrics.ERRORS.labels(model, backend, protocol, error)
        counter.inc()
    backend_seconds = state.get("backend_seconds")
    if backend_seconds is not None and children.backend is not None and children.overhead is not None:
        children.backend.observe(backend_seconds)
        children.overhead.observe(max(elapsed - backend_seconds, 0.0))
