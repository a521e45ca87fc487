"""``gateway serve``: the gateway under uvicorn, alone or as one of ``GATEWAY_WORKERS``' workers.

With ``workers > 1`` and not ``worker``, this process is the supervisor (``gateway.workers``) and
starts the workers, each ``gateway serve --worker`` on the shared port. Readiness turns false on
SIGTERM/SIGINT before the listener closes (``GATEWAY_SHUTDOWN_DRAIN_SECONDS``), then in-flight
requests finish.

Before grpc is imported, ``grpc_defaults`` picks grpc's I/O path for the TF Serving calls and the
gRPC front doors (below).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import MutableMapping
from importlib import metadata
from typing import Any

from gateway.settings import Settings

#: grpc's own experiment switches, set for the gateway when the operator left ``GRPC_EXPERIMENTS``
#: unset and the installed grpcio is one they were measured on: grpc's classic client I/O and
#: completion queue instead of its EventEngine ones, measured at 0.88x the gateway's CPU per TF
#: Serving request and 0.07 ms off its median (docs/benchmarks.md). grpc reads the variable once,
#: when it starts; an empty ``GRPC_EXPERIMENTS`` keeps grpc's defaults. Another grpcio (whose
#: experiments may differ: an unknown name costs an error line at start) gets its defaults until
#: measured.
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_callback_cq"
GRPCIO_MEASURED = ("1.85.",)


def grpc_defaults(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set ``GRPC_EXPERIMENTS`` as above unless the operator set it; what grpc will read."""
    if "GRPC_EXPERIMENTS" not in environ:
        try:
            version = metadata.version("grpcio")
        except metadata.PackageNotFoundError:
            return None
        if version.startswith(GRPCIO_MEASURED):
            environ["GRPC_EXPERIMENTS"] = GRPC_EXPERIMENTS
    return environ.get("GRPC_EXPERIMENTS")


def serve(settings: Settings, worker: bool = False) -> int:
    """Run the gateway until it is stopped; the exit status. ValueError: a malformed tokens file;
    OSError: the port cannot be listened on."""
    import uvicorn

    from gateway.requestid import RequestIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    # With several workers each line names its process.
    process = " %(process)d" if settings.workers > 1 else ""
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s{process} %(levelname)s %(name)s [%(request_id)s]: %(message)s")
    )
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    grpc_defaults()  # before anything imports grpc; the workers inherit it
    if settings.workers > 1 and not worker:
        from gateway.workers import supervise

        return supervise(settings)

    from gateway.app import create_app
    from gateway.wire import JoinedWritesProtocol

    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            log_config=None,
            http=JoinedWritesProtocol,  # uvicorn's httptools protocol, each answer in one write
            timeout_graceful_shutdown=30,
            # Connections plus requests in progress; past it uvicorn answers 503 at once.
            limit_concurrency=settings.max_concurrency,
        )
    )
    stop = server.handle_exit

    def drain_then_stop(sig: int, frame: Any) -> None:
        if worker and sig == signal.SIGINT:
            return  # the supervisor passes the terminal's Ctrl-C on as SIGTERM: one signal, one drain
        # Readiness turns false first; the listener closes only after the drain delay, so a load
        # balancer stops sending before connections are refused. In-flight requests then finish.
        app.state.ready = False
        if settings.shutdown_drain_seconds > 0 and not server.should_exit:
            threading.Timer(settings.shutdown_drain_seconds, stop, args=(sig, frame)).start()
        else:
            stop(sig, frame)

    server.handle_exit = drain_then_stop  # type: ignore[method-assign]
    if not worker:
        server.run()
        return 0
    from gateway.workers import shared_socket, stop_when_orphaned

    stop_when_orphaned(lambda: drain_then_stop(signal.SIGTERM, None))
    try:
        sock = shared_socket(settings.host, settings.port)
    except OSError as exc:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    server.run(sockets=[sock])
    return 0
