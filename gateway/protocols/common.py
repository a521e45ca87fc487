"""What every protocol shares: reading a bounded body, the routing table, signatures, response headers
and error answers (the inference pipeline itself is ``pipeline.serve``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fastapi import Request, Response
from starlette.datastructures import State
from starlette.requests import ClientDisconnect

from gateway.backends.scrub import scrub
from gateway.core.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.core.restjson import dumps
from gateway.core.tensors import Signature
from gateway.services import services_of

log = logging.getLogger("gateway")

if TYPE_CHECKING:
    from gateway.core.types import Target
    from gateway.routing.table import Resolved, RoutingTable
    from gateway.settings import Settings


def settings_of(request: Request) -> Settings:
    return services_of(request).settings


def table_of(request: Request) -> RoutingTable:
    return services_of(request).router.table


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The request body, refusing (413) more than ``limit`` (default: the configured limit) before
    reading it all.

    Read from the ASGI ``receive`` directly rather than through Starlette's ``stream()``, an async
    generator the event loop tracks (a hook and a weak reference per request); the body is then
    left where Starlette's own ``body()`` finds it, so nothing that reads it later sees a
    consumed stream.
    """
    if limit is None:
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
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes (GATEWAY_MAX_BODY_BYTES)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # where Starlette's Request.body() and stream() look first
    return body


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


#: Each route's routing headers, encoded once: (model, version, stack, label) -> header lines.
_ROUTE_LINES: dict[tuple[str, int, str, str | None], list[tuple[bytes, bytes]]] = {}
_ROUTE_LINES_MAX = 4096  # routes come and go with deploys: start again past this many
_FRAMING = frozenset({"content-length", "content-type"})


def _lines(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def respond(resolved: Resolved, body: bytes, media_type: str, *extra: Mapping[str, str]) -> Response:
    """A 200 answer carrying the routing headers, then ``extra`` headers: the very header lines
    Starlette's ``Response(body, media_type=..., headers={**routing_headers(resolved), *extra})``
    writes, with the routing headers encoded once per route instead of on every request (``extra``
    never names a routing header)."""
    target = resolved.target
    key = (target.model, target.version, target.backend.kind, resolved.label)
    lines = _ROUTE_LINES.get(key)
    if lines is None:
        if len(_ROUTE_LINES) >= _ROUTE_LINES_MAX:
            _ROUTE_LINES.clear()
        lines = _ROUTE_LINES[key] = _lines(routing_headers(resolved))
    raw = lines.copy()
    for headers in extra:
        if headers:
            if not _FRAMING.isdisjoint(map(str.lower, headers)):
                return _framed_by_codec(resolved, body, media_type, extra)
            raw += _lines(headers)
    response = Response(body, media_type=media_type)  # Content-Length and Content-Type, Starlette's way
    response.raw_headers[:0] = raw  # before them, where Starlette puts a response's own headers
    return response


def _framed_by_codec(
    resolved: Resolved, body: bytes, media_type: str, extra: tuple[Mapping[str, str], ...]
) -> Response:
    """A codec naming the framing itself: Starlette then leaves its own out, as it does here."""
    merged = routing_headers(resolved)
    for headers in extra:
        merged.update(headers)
    return Response(body, media_type=media_type, headers=merged)


def json_response(
    payload: object, status_code: int = 200, headers: dict[str, str] | None = None, *, finite: bool = True
) -> Response:
    """A JSON answer written by orjson (numpy arrays included); ``finite=False`` when it holds NaN or
    infinities, written as TF Serving writes them (``restjson.dumps``)."""
    return Response(
        dumps(payload, finite=finite), status_code=status_code, media_type="application/json", headers=headers
    )


def mark_route(state: State, resolved: Resolved) -> None:
    """Record where the request was routed (in its request state), for the metrics."""
    target = resolved.target
    state.route = (target.model, str(target.version), resolved.label or "", target.backend.kind)


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
