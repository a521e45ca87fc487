"""The one inference pipeline every front door calls: resolve, decode, dispatch, guard, shadow, encode.

A front door (TF Serving REST, the Open Inference Protocol, TorchServe's paths) is a ``Codec``: it
turns a body into the internal request and the internal result into bytes, and knows nothing about
routing. ``serve`` does everything else, the same way for every protocol, so routing policy (the
canary split and its guard), shadow copies and metrics cannot differ between front doors.

A request has two variants: an ``InferenceRequest`` (decoded tensors) or a ``Passthrough`` (the
caller's bytes, for a backend that takes them as they are: TorchServe's own paths to a TorchServe
version). Both go through ``dispatch``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fastapi import Request, Response

from gateway.core.errors import GatewayError
from gateway.core.types import InferenceRequest, InferenceResult, RawResult, Target
from gateway.protocols.common import (
    mark_route,
    read_body,
    require_signature,
    routing_headers,
    settings_of,
    signature_of,
    table_of,
)
from gateway.protocols.keys import require_inference_key
from gateway.protocols.limits import decode_bounded
from gateway.routing.table import Resolved, parse_version

if TYPE_CHECKING:
    from gateway.backends.resilience import BackendGuard
    from gateway.core.tensors import Signature
    from gateway.routing.guard import CanaryGuard
    from gateway.routing.shadow import ShadowRunner

T = TypeVar("T")
log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class Passthrough:
    """The pass-through request variant: the caller's body and content type, sent on unchanged."""

    body: bytes
    content_type: str


@dataclass(slots=True)
class Decoded:
    """What a codec read from a body: the internal request, and the caller's request ID to echo."""

    request: InferenceRequest
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Encoded:
    """What a codec wrote: the answer's body, its content type, and headers of its own."""

    body: bytes
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


class Codec(Protocol):
    """One protocol's translation between its bytes and the internal request and result."""

    #: The protocol's name in metrics (``gateway_requests_total{protocol=...}``).
    protocol: str
    #: The OpenAPI tag and request body description of its routes.
    tag: str
    openapi: dict[str, Any]
    #: True when a backend that takes raw bodies (``raw_passthrough``) gets the caller's bytes.
    passthrough: bool
    #: Headers every answer of this protocol carries, beside the routing headers.
    headers: Mapping[str, str]

    def decode(self, body: bytes, signature: Signature, max_depth: int, headers: Mapping[str, str]) -> Decoded:
        """The body as an internal request checked against ``signature`` (a 400 names what is wrong);
        ``headers`` are the request's (lower-case names), for a framing a header describes."""
        ...

    def encode(self, decoded: Decoded, result: InferenceResult, target: Target, signature: Signature) -> Encoded:
        """The answer's body, content type and own headers."""
        ...


def resolve(request: Request, params: Mapping[str, str]) -> Resolved:
    """The target a request's path parameters name: a version, a label, or the traffic policy."""
    table = table_of(request)
    version = params.get("version")
    if version is not None:
        return table.resolve(params["model"], parse_version(version))
    label = params.get("label")
    if label is not None:
        return table.resolve(params["model"], label=label)
    return table.resolve(params["model"], headers=request.headers)


async def serve(request: Request, codec: Codec, params: Mapping[str, str]) -> Response:
    """Answer one inference request: key, resolve, decode, dispatch (guard, shadow), encode.

    Metrics are read by ``InferenceMetrics`` from what this records in the request state.
    """
    await require_inference_key(request)
    resolved = resolve(request, params)
    mark_route(request, resolved)
    target = resolved.target
    body = await read_body(request)
    headers = {**routing_headers(resolved), **codec.headers}
    if codec.passthrough and target.backend.raw_passthrough:
        call = Passthrough(body, request.headers.get("content-type", "application/octet-stream"))
        raw = await dispatch(request, codec, resolved, call)
        assert isinstance(raw, RawResult)  # a Passthrough is answered by forward()
        return Response(raw.body, status_code=raw.status, media_type=raw.content_type, headers=headers)
    signature = require_signature(target, await signature_of(target))
    depth = settings_of(request).max_json_depth
    decoded = await decode_bounded(request, len(body), lambda: codec.decode(body, signature, depth, request.headers))
    result = await dispatch(request, codec, resolved, decoded.request)
    assert isinstance(result, InferenceResult)  # an InferenceRequest is answered by infer()
    encoded = codec.encode(decoded, result, target, signature)
    return Response(encoded.body, media_type=encoded.media_type, headers={**headers, **encoded.headers})


async def timed(request: Request, backend: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run a backend call through that backend's in-flight cap and circuit breaker, timed."""
    guard: BackendGuard = request.app.state.backend_guards[backend]
    start = time.perf_counter()
    try:
        return await guard.call(call)
    finally:
        request.state.backend_seconds = time.perf_counter() - start


async def dispatch(
    request: Request, codec: Codec, resolved: Resolved, call: InferenceRequest | Passthrough
) -> InferenceResult | RawResult:
    """Run either request variant on the routed version, feed the canary guard, maybe shadow it."""
    target = resolved.target
    backend = target.backend
    routes = table_of(request).models.get(target.model)
    guard: CanaryGuard = request.app.state.guard
    answer: InferenceResult | RawResult
    try:
        if isinstance(call, Passthrough):
            body, content_type = call.body, call.content_type
            answer = await timed(request, backend.kind, lambda: backend.forward(target, body, content_type))
        else:
            inference = call
            answer = await timed(request, backend.kind, lambda: backend.infer(target, inference))
    except GatewayError as exc:
        if exc.status_code >= 500:
            guard.observe(routes, resolved, request.state.backend_seconds, ok=False)
        raise
    guard.observe(routes, resolved, request.state.backend_seconds, ok=True)
    if routes is not None:
        shadow = routes.shadow_for(target)
        if shadow is not None:
            copy = await _shadow_copy(request, codec, target, call, answer)
            if copy is not None:
                runner: ShadowRunner = request.app.state.shadow
                runner.submit(target, shadow, *copy)
    return answer


async def _shadow_copy(
    request: Request,
    codec: Codec,
    target: Target,
    call: InferenceRequest | Passthrough,
    answer: InferenceResult | RawResult,
) -> tuple[InferenceRequest, InferenceResult] | None:
    """The request and answer to compare a shadow against, as tensors.

    A pass-through body is decoded only now that a copy was drawn, by the front door's own codec
    (TorchServe's paths take TF Serving REST JSON for versions with a signature); a body it cannot
    read (an image, say) cannot be compared, and is not copied.
    """
    if isinstance(call, InferenceRequest) and isinstance(answer, InferenceResult):
        return call, answer
    if not isinstance(call, Passthrough) or not isinstance(answer, RawResult):
        return None
    signature = await signature_of(target)
    if signature is None:
        return None
    body, depth, headers = call.body, settings_of(request).max_json_depth, request.headers
    try:
        decoded = await decode_bounded(request, len(body), lambda: codec.decode(body, signature, depth, headers))
    except GatewayError as exc:
        log.debug("no shadow copy of %s v%d: %s", target.model, target.version, exc.message)
        return None
    return decoded.request, InferenceResult(body=answer.body, form=decoded.request.form)
