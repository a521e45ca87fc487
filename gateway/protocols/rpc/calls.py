"""What every gRPC method shares: the call's metadata, its deadline, its metrics and its errors.

A gRPC call becomes a pipeline ``Call``: its metadata are its headers (gRPC sends keys in lower
case; look-ups are case-insensitive, as for REST), so the inference key and the sticky-routing
header are read exactly as on the REST doors. Each call is measured like a REST request, under
its own ``protocol`` label, with ``code`` the HTTP status its error carries on the REST doors
(``200`` when it succeeded), so dashboards and alerts read all doors alike. Errors become gRPC
status codes with the REST message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from starlette.datastructures import Headers, State

from gateway import metrics
from gateway.backends.deadline import DEADLINE
from gateway.backends.scrub import scrub
from gateway.core.errors import GatewayError, Overloaded
from gateway.protocols.instrument import observe
from gateway.protocols.pipeline import Call
from gateway.services import Services

log = logging.getLogger("gateway")
T = TypeVar("T")

#: A gateway error's HTTP status -> the gRPC status code of the same meaning (the one table).
STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNKNOWN,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(exc: GatewayError) -> grpc.StatusCode:
    """The gRPC status of a gateway error (the gateway's own concurrency limits: RESOURCE_EXHAUSTED)."""
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return STATUS_CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)


def metadata_headers(context: grpc.aio.ServicerContext) -> Headers:
    """The call's text metadata as case-insensitive headers (binary ``-bin`` entries left out)."""
    raw = [
        (key.lower().encode("latin-1"), value.encode("latin-1"))
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str) and value.isascii()
    ]
    return Headers(raw=raw)


async def run(
    services: Services,
    protocol: str,
    context: grpc.aio.ServicerContext,
    handle: Callable[[Call], Awaitable[T]],
    *,
    measured: bool = True,
) -> T:
    """Run one gRPC method's ``handle`` as a pipeline call: the inference key, the client's
    deadline for the backend call, errors as gRPC statuses, and (when ``measured``: inference, not
    metadata or status, as on the REST doors) the request metrics under ``protocol``."""
    recorded: dict[str, Any] = {}  # what the pipeline records for the metrics (``State`` writes here)
    call = Call(services, metadata_headers(context), State(recorded))
    remaining = context.time_remaining()
    token = DEADLINE.set(time.monotonic() + remaining if remaining is not None else None)
    inflight = metrics.INFLIGHT.labels(protocol)
    if measured:
        inflight.inc()
    start, start_monotonic = time.perf_counter(), time.monotonic()
    code = 200
    try:
        services.inference_keys.check_headers(call.headers)
        return await handle(call)
    except GatewayError as exc:
        code = exc.status_code
        call.state.error = type(exc).__name__
        await context.abort(status_code(exc), _message(protocol, exc))
        raise AssertionError("abort raises") from None
    except asyncio.CancelledError:  # the client went away, or its deadline passed
        late = remaining is not None and time.monotonic() >= start_monotonic + remaining
        code, call.state.error = (504, "DeadlineExceeded") if late else (499, "Cancelled")
        raise
    except Exception:
        code = 500
        call.state.error = "InternalError"
        log.exception("unhandled error in a %s call", protocol)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error in the gateway; see its log")
        raise AssertionError("abort raises") from None
    finally:
        DEADLINE.reset(token)
        if measured:
            inflight.dec()
            observe(recorded, protocol, str(code), time.perf_counter() - start)


def _message(protocol: str, exc: GatewayError) -> str:
    """The REST message of ``exc``; a 5xx one scrubbed of internal addresses (the log gets it all)."""
    if exc.status_code < 500:
        return exc.message
    full = exc.message if exc.detail is None else f"{exc.message} (detail: {exc.detail})"
    log.warning("%s call -> %d: %s", protocol, exc.status_code, full)
    return scrub(exc.message)
