"""What every protocol shares: reading a bounded body, routing, signatures, response headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from fastapi import Request, Response

from gateway.backends.scrub import scrub
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.restjson import dumps
from gateway.tensors import Signature

T = TypeVar("T")
log = logging.getLogger("gateway")

if TYPE_CHECKING:
    from gateway.backends.base import InferenceRequest, InferenceResult, Target
    from gateway.backends.resilience import BackendGuard
    from gateway.rollouts.guard import CanaryGuard
    from gateway.rollouts.shadow import ShadowRunner
    from gateway.routing.table import Resolved, RoutingTable
    from gateway.settings import Settings


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def table_of(request: Request) -> RoutingTable:
    table: RoutingTable = request.app.state.router.table
    return table


async def read_body(request: Request) -> bytes:
    """The request body, refusing (413) more than the configured limit before reading it all."""
    limit = settings_of(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length header must be a non-negative integer")
        if int(declared) > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes is over the limit of {limit} (GATEWAY_MAX_BODY_BYTES)"
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes (GATEWAY_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


async def signature_of(target: Target) -> Signature | None:
    """The version's signature: from the model store, else asked of the backend."""
    if target.signature is not None:
        return target.signature
    return await target.backend.signature(target.model, target.version)


def require_signature(target: Target, signature: Signature | None) -> Signature:
    if signature is None:
        raise BadRequest(
            f"model '{target.model}' version {target.version} has no signature.json; "
            "use the TorchServe protocol (/predictions) to pass its bodies through"
        )
    return signature


def routing_headers(resolved: Resolved) -> dict[str, str]:
    """The headers that say which version and stack answered."""
    target = resolved.target
    headers = {
        "X-Model-Name": target.model,
        "X-Model-Version": str(target.version),
        "X-Backend": target.backend.kind,
    }
    if resolved.label:
        headers["X-Model-Label"] = resolved.label
    return headers


def json_response(
    payload: object, status_code: int = 200, headers: dict[str, str] | None = None, *, finite: bool = True
) -> Response:
    """A JSON answer written by orjson (numpy arrays included); ``finite=False`` when it holds NaN or
    infinities, written as TF Serving writes them (``restjson.dumps``)."""
    return Response(
        dumps(payload, finite=finite), status_code=status_code, media_type="application/json", headers=headers
    )


def mark_route(request: Request, resolved: Resolved) -> None:
    """Record where the request was routed, for the metrics middleware."""
    target = resolved.target
    request.state.route = (target.model, str(target.version), resolved.label or "", target.backend.kind)


async def timed(request: Request, backend: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run a backend call through that backend's in-flight cap and circuit breaker, timed."""
    guard: BackendGuard = request.app.state.backend_guards[backend]
    start = time.perf_counter()
    try:
        return await guard.call(call)
    finally:
        request.state.backend_seconds = time.perf_counter() - start


async def dispatch(request: Request, resolved: Resolved, inference: InferenceRequest) -> InferenceResult:
    """Run the inference on the routed version; then, maybe, copy it to the shadow version.

    Every protocol's inference goes through here, so routing policy, shadowing and metrics are
    applied the same way for all of them.
    """
    target = resolved.target
    routes = table_of(request).models.get(target.model)
    guard: CanaryGuard = request.app.state.guard
    try:
        result = await timed(request, target.backend.kind, lambda: target.backend.infer(target, inference))
    except GatewayError as exc:
        if exc.status_code >= 500:
            guard.observe(routes, resolved, request.state.backend_seconds, ok=False)
        raise
    guard.observe(routes, resolved, request.state.backend_seconds, ok=True)
    if routes is not None:
        shadow = routes.shadow_for(target)
        if shadow is not None:
            runner: ShadowRunner = request.app.state.shadow
            runner.submit(target, shadow, inference, result)
    return result


def error_response(request: Request, exc: GatewayError) -> Response:
    """The answer to a GatewayError: ``{"error": message}`` with its status and headers.

    A 5xx answer never carries an internal address (the adapters' tables leave them out; this
    scrubs any other source too, such as a database error); the log line gets the full detail,
    and the request ID through ``RequestIdFilter``.
    """
    request.state.error = type(exc).__name__
    message = exc.message
    if exc.status_code >= 500:
        full = exc.message if exc.detail is None else f"{exc.message} (detail: {exc.detail})"
        log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, full)
        message = scrub(message)
    return json_response({"error": message}, exc.status_code, exc.headers)
