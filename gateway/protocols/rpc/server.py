"""The gateway's gRPC server: ``grpc.aio`` on the app's own event loop, started and stopped by its lifespan.

It serves TF Serving's services and the Open Inference Protocol's on one port
(``GATEWAY_GRPC_PORT``), with the REST body limit as its message limit, so a message over it is
refused (RESOURCE_EXHAUSTED) before it is read whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from gateway.protocols.rpc import oip, tfserving
from gateway.services import Services

log = logging.getLogger("gateway")


def build_server(services: Services, ready: Callable[[], bool]) -> grpc.aio.Server:
    """A gRPC server with every gRPC front door, no port bound yet (``ready``: the gateway's readiness)."""
    limit = services.settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 << 20)),
            # A second process on the same port is a start-up error, except for this gateway's own
            # workers (GATEWAY_WORKERS), which all listen on it: the kernel spreads the connections.
            ("grpc.so_reuseport", 1 if services.settings.workers > 1 else 0),
        ],
        maximum_concurrent_rpcs=services.settings.max_concurrency,
    )
    for handler in (*tfserving.handlers(services), *oip.handlers(services, ready)):
        server.add_generic_rpc_handlers((handler,))
    return server


async def start(services: Services, ready: Callable[[], bool]) -> grpc.aio.Server | None:
    """Start the gRPC server on ``GATEWAY_GRPC_PORT`` (None when it is unset or 0)."""
    settings = services.settings
    if not settings.grpc_port:
        return None
    server = build_server(services, ready)
    address = (
        f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else f"{settings.host}:{settings.grpc_port}"
    )
    server.add_insecure_port(address)
    await server.start()
    log.info("gRPC front doors (TF Serving, Open Inference Protocol) on %s", address)
    return server


async def stop(server: grpc.aio.Server | None, grace: float) -> None:
    """Stop taking calls and let those in progress finish, for at most ``grace`` seconds."""
    if server is not None:
        await server.stop(grace)
