"""The one inference pipeline every front door calls: resolve, decode, dispatch, guard, shadow, encode.

A front door (TF Serving REST, the Open Inference Protocol, TorchServe's paths) is a ``Codec``: it
turns a body into the internal request and the internal result into bytes, and knows nothing about
routing. ``serve`` does everything else, the same way for every protocol, so routing policy (the
canary split and its guard), shadow copies and metrics cannot differ between front doors.

A request has two variants: an ``InferenceRequest`` (decoded tensors) or a ``Passthrough`` (the
caller's bytes, for a backend that takes them as they are: TorchServe's own paths to a TorchServe
version, asked of the adapter as ``Backend.passthrough``). Both go through ``dispatch``, and both
are answered by an ``InferenceResult``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fastapi import Request, Response
from starlette.datastructures import State

from gateway.core.errors import BadRequest, GatewayError
from gateway.core.types import InferenceRequest, InferenceResult, Passthrough, Target
from gateway.protocols.common import mark_route, read_body, require_signature, respond, signature_of
from gateway.routing.table import Resolved, parse_version
from gateway.services import Services, services_of

if TYPE_CHECKING:
    from gateway.core.tensors import Signature

T = TypeVar("T")
log = logging.getLogger("gateway")


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
    #: True when a backend that takes raw bodies (``Backend.passthrough``) gets the caller's bytes.
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


@dataclass(frozen=True, slots=True)
class Call:
    """One inference call as every front door hands it to the pipeline, with no transport in it.

    ``headers`` are the caller's HTTP headers or gRPC metadata (case-insensitive look-ups: the
    sticky-routing header and the inference key are read from them). ``state`` is where the
    pipeline records what the metrics read (``route``, ``backend_seconds``, ``error``): the
    request state for REST, a fresh ``State`` for a gRPC call.
    """

    services: Services
    headers: Mapping[str, str]
    state: State

    @classmethod
    def of(cls, request: Request) -> Call:
        """The call of a REST request."""
        return cls(services_of(request), request.headers, request.state)

    async def decode(self, size: int, decode: Callable[[], T]) -> T:
        """Run a protocol's decode of a ``size``-byte body under the app's ``DecodeSlots``."""
        return await self.services.decode_slots.run(size, decode)


def resolve(call: Call, params: Mapping[str, str]) -> Resolved:
    """The target a request's parameters name: a version, a label, or the traffic policy."""
    table = call.services.router.table
    version = params.get("version")
    if version is not None:
        return table.resolve(params["model"], parse_version(version))
    label = params.get("label")
    if label is not None:
        return table.resolve(params["model"], label=label)
    return table.resolve(params["model"], headers=call.headers)


async def serve(request: Request, codec: Codec, params: Mapping[str, str]) -> Response:
    """Answer one inference request: key, resolve, decode, dispatch (guard, shadow), encode.

    Metrics are read by ``InferenceMetrics`` from what this records in the request state.
    """
    call = Call.of(request)
    services = call.services
    services.inference_keys.check(request)
    resolved = resolve(call, params)
    mark_route(call.state, resolved)
    target = resolved.target
    body = await read_body(request, services.settings.max_body_bytes)
    if codec.passthrough and target.backend.passthrough is not None:
        passthrough = Passthrough(body, request.headers.get("content-type", "application/octet-stream"))
        answer = await dispatch(call, codec, resolved, passthrough)
        return respond(resolved, answer.body if answer.body is not None else b"", answer.content_type, codec.headers)
    signature = require_signature(target, await signature_of(target))
    depth = services.settings.max_json_depth
    decoded = await call.decode(len(body), lambda: codec.decode(body, signature, depth, request.headers))
    result = await dispatch(call, codec, resolved, decoded.request)
    encoded = codec.encode(decoded, result, target, signature)
    return respond(resolved, encoded.body, encoded.media_type, codec.headers, encoded.headers)


async def timed(call: Call, backend: str, run: Callable[[], Awaitable[T]]) -> T:
    """Run a backend call through that backend's in-flight cap and circuit breaker, timed."""
    guard = call.services.backend_guards[backend]
    start = time.perf_counter()
    try:
        return await guard.call(run)
    finally:
        call.state.backend_seconds = time.perf_counter() - start


async def dispatch(
    call: Call, codec: Codec | None, resolved: Resolved, request: InferenceRequest | Passthrough
) -> InferenceResult:
    """Run either request variant on the routed version, feed the canary guard, maybe shadow it.

    ``codec`` decodes a pass-through body for a shadow copy; a front door that never passes
    bodies through (gRPC) gives None.
    """
    target = resolved.target
    backend = target.backend
    routes = call.services.router.table.models.get(target.model)
    guard = call.services.guard
    answer: InferenceResult
    try:
        if isinstance(request, Passthrough):
            forwarder = backend.passthrough
            if forwarder is None:  # serve() passes bodies on only to a backend that takes them
                raise BadRequest(f"{backend.kind} versions take TF Serving REST JSON bodies, not raw bodies")
            passthrough = request
            answer = await timed(call, backend.kind, lambda: forwarder.forward(target, passthrough))
        else:
            inference = request
            answer = await timed(call, backend.kind, lambda: backend.infer(target, inference))
    except GatewayError as exc:
        if exc.status_code >= 500:
            guard.observe(routes, resolved, call.state.backend_seconds, ok=False)
        raise
    guard.observe(routes, resolved, call.state.backend_seconds, ok=True)
    if routes is not None:
        shadow = routes.shadow_for(target)
        if shadow is not None:
            copy = await _shadow_copy(call, codec, target, request, answer)
            if copy is not None:
                call.services.shadow.submit(target, shadow, *copy)
    return answer


async def _shadow_copy(
    call: Call,
    codec: Codec | None,
    target: Target,
    request: InferenceRequest | Passthrough,
    answer: InferenceResult,
) -> tuple[InferenceRequest, InferenceResult] | None:
    """The request and answer to compare a shadow against, as tensors.

    A pass-through body is decoded only now that a copy was drawn, by the front door's own codec
    (TorchServe's paths take TF Serving REST JSON for versions with a signature); a body it cannot
    read (an image, say) cannot be compared, and is not copied.
    """
    if isinstance(request, InferenceRequest):
        return request, answer
    if codec is None:
        return None
    signature = await signature_of(target)
    if signature is None:
        return None
    body, depth = request.body, call.services.settings.max_json_depth
    try:
        decoded = await call.decode(len(body), lambda: codec.decode(body, signature, depth, call.headers))
    except GatewayError as exc:
        log.debug("no shadow copy of %s v%d: %s", target.model, target.version, exc.message)
        return None
    return decoded.request, answer.in_form(decoded.request.form)
