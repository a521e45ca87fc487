"""The app factory: ``create_app(settings) -> FastAPI``. Nothing heavy happens at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import metrics
from gateway.admin import routes as admin_routes
from gateway.admin.gate import AdminGate
from gateway.artifacts import open_store
from gateway.backends.resilience import BackendGuard
from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.torchserve import TorchServeBackend
from gateway.core.auth import Authenticator, InferenceKeys, load_tokens
from gateway.core.errors import GatewayError
from gateway.core.kinds import KINDS, Kind
from gateway.core.limits import DecodeSlots
from gateway.core.types import Backend
from gateway.protocols import oip, tfserving_rest
from gateway.protocols.common import error_response, json_response
from gateway.protocols.fastpath import InferenceRoutes
from gateway.protocols.instrument import InferenceMetrics
from gateway.protocols.oip_binary import HEADER as OIP_BINARY_HEADER
from gateway.protocols.routes import router as inference_router
from gateway.protocols.rpc import server as rpc_server
from gateway.registry.store import RegistryStore
from gateway.registry.watch import Watcher
from gateway.requestid import RequestIdMiddleware
from gateway.rollouts.adopt import adopt_if_empty
from gateway.rollouts.backfill import backfill
from gateway.rollouts.deploy import Deployer
from gateway.rollouts.probe import probe_backends
from gateway.rollouts.service import RolloutService
from gateway.rollouts.startup import sync_defaults
from gateway.routing.replicas import AdapterFactory, GuardLimits, ReplicaPool
from gateway.routing.replicated import ReplicatedBackend
from gateway.routing.router import Router
from gateway.routing.shadow import ShadowRunner
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("gateway")


def make_backends(settings: Settings) -> dict[str, Backend]:
    """One adapter per stack, from the settings."""
    return {
        "torchserve": TorchServeBackend(
            settings.torchserve_url,
            settings.torchserve_management_url,
            timeout=settings.torchserve_timeout_seconds,
            connect_timeout=settings.torchserve_connect_timeout_seconds,
            max_connections=settings.torchserve_max_connections,
            store=settings.model_store,
            workers=settings.torchserve_workers,
            load_timeout=settings.deploy_ready_timeout_seconds,
            retry_ratio=settings.retry_budget_ratio,
            startup_file=settings.torchserve_startup_path,
        ),
        "tfserving": TFServingBackend(
            settings.tfserving_target,
            timeout=settings.tfserving_timeout_seconds,
            max_message_bytes=settings.tfserving_max_message_bytes,
            base_path=settings.tfserving_model_base_path or str(settings.model_store.resolve()),
            load_timeout=settings.deploy_ready_timeout_seconds,
            retry_ratio=settings.retry_budget_ratio,
            config_file=settings.tfserving_config_path,
            predict_client=settings.tfserving_predict_client,
        ),
    }


def replica_adapters(settings: Settings) -> AdapterFactory:
    """The adapter of one agent-run replica, pointed at the inference address its agent reported;
    no retry of its own (``ReplicatedBackend`` retries on another replica) and no management URL."""

    def make(stack: Kind, address: str) -> Backend:
        if stack == "torchserve":
            return TorchServeBackend(
                address,
                "",
                timeout=settings.torchserve_timeout_seconds,
                connect_timeout=settings.torchserve_connect_timeout_seconds,
                max_connections=settings.torchserve_max_connections,
                retry_ratio=0.0,
            )
        return TFServingBackend(
            address.removeprefix("grpc://"),
            timeout=settings.tfserving_timeout_seconds,
            max_message_bytes=settings.tfserving_max_message_bytes,
            retry_ratio=0.0,
            predict_client=settings.tfserving_predict_client,
        )

    return make


class GatewayApp(FastAPI):
    """FastAPI, entered through the front layers of its middleware list (``FRONT``: CORS, the
    inference fast path, request IDs, inference metrics), built in their order outside FastAPI's
    own stack, to which they pass what they do not answer. Inference POSTs are answered in front
    (``InferenceRoutes`` doing for them what the request-ID and metrics layers and FastAPI's error
    handling do for the rest) and never enter FastAPI's middleware, routing or telemetry; the
    other middleware (the admin gate) stays inside, with FastAPI's error handling around it."""

    front: ASGIApp | None = None

    def build_middleware_stack(self) -> ASGIApp:
        front = [m for m in self.user_middleware if _is_front(m.cls)]
        everything = self.user_middleware
        self.user_middleware = [m for m in everything if not _is_front(m.cls)]
        try:
            stack = super().build_middleware_stack()
        finally:
            self.user_middleware = everything
        app: ASGIApp = self.fastapi
        for cls, args, kwargs in reversed(front):
            if cls is InferenceRoutes:
                kwargs = {**kwargs, "unexpected": self.exception_handlers[Exception]}
            app = cls(app, *args, **kwargs)
        self.front = app
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        assert self.front is not None
        scope["app"] = self  # as Starlette sets it: the routes read app.state
        if self.root_path:
            scope["root_path"] = self.root_path
        await self.front(scope, receive, send)

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own stack, where the front layers send what they do not answer."""
        await super().__call__(scope, receive, send)


FRONT: tuple[object, ...] = (CORSMiddleware, InferenceRoutes, RequestIdMiddleware, InferenceMetrics)


def _is_front(cls: object) -> bool:
    return cls in FRONT


def create_app(
    settings: Settings | None = None,
    backends: Mapping[str, Backend] | None = None,
    replica_adapter: AdapterFactory | None = None,
) -> GatewayApp:
    """Build the gateway app. ``backends`` replaces the real adapters, ``replica_adapter`` the
    adapters of agent-run replicas (unit tests pass doubles)."""
    settings = settings or Settings()
    adapters = dict(backends) if backends is not None else make_backends(settings)
    pool: ReplicaPool | None = None
    if settings.agent_stacks:  # issue 15: these stacks are routed over the replicas agents run
        limits = GuardLimits(
            settings.backend_max_inflight, settings.breaker_failures, settings.breaker_cooldown_seconds
        )
        stacks = [kind for kind in KINDS if kind in settings.agent_stacks]
        pool = ReplicaPool(stacks, replica_adapter or replica_adapters(settings), ttl=settings.replica_ttl_seconds,
                           limits=limits)  # fmt: skip
        for kind in stacks:
            adapters[kind] = ReplicatedBackend(
                kind, pool, passthrough=kind == "torchserve", retry_ratio=settings.retry_budget_ratio
            )
    artifacts = open_store(settings)
    router = Router(adapters, settings.model_store, artifacts)
    registry = RegistryStore(settings.database_url)
    shadow = ShadowRunner(settings.shadow_max_inflight, settings.smoke_tolerance)
    rollouts = RolloutService(settings, registry, router, adapters, shadow)
    deployer = Deployer(rollouts, artifacts, pool)

    async def follow(revision: int) -> None:
        if revision <= router.revision:
            return
        try:
            await rollouts.refresh()
        except GatewayError as exc:  # keep routing as it is; the watcher tries again
            log.warning("could not refresh routes: %s", exc.message)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        for backend in adapters.values():
            await backend.start()
        await asyncio.to_thread(registry.migrate)
        following: asyncio.Task[None] | None = None
        sweeping: asyncio.Task[None] | None = None
        if pool is not None:  # before the table is built: TF Serving signatures come from replicas
            await pool.refresh(registry)
            following = asyncio.create_task(pool.run(registry, settings.replica_poll_seconds))
            assert deployer.replicas is not None
            sweeping = asyncio.create_task(deployer.replicas.sweep_forever())
        if await adopt_if_empty(rollouts, settings.state_file):
            log.info("adopted the model store into an empty registry")
        await rollouts.refresh()
        await rollouts.sync_startup_files()
        await sync_defaults(router)  # TorchServe's default version is the stable one
        for name, routes in sorted(router.table.models.items()):
            stable = routes.stable()
            log.info("model %s: versions %s, stable %d", name, sorted(routes.versions), stable.target.version)

        def on_change(revision: int) -> None:  # called on the watcher's thread
            loop.call_soon_threadsafe(lambda: loop.create_task(follow(revision)) and None)

        watcher = Watcher(registry, on_change, poll_interval=settings.registry_poll_seconds)
        watcher.start()
        probe = asyncio.create_task(probe_backends(router, deployer.restore, settings.backend_probe_seconds))
        # Issue 15: versions the artifact store lacks (adopted ones) are stored for the replicas' agents.
        storing = asyncio.create_task(backfill(rollouts, artifacts))
        metrics_server = None
        if settings.metrics_port is not None:  # a thread of this process, so it sees the same registry
            # With several workers each binds the port too (SO_REUSEPORT); any of them answers for all.
            metrics_server, _ = metrics.start_server(settings.metrics_port, settings.host, settings.workers > 1)
            log.info("metrics on http://%s:%d/metrics only", settings.host, settings.metrics_port)
        grpc_server = await rpc_server.start(services, lambda: bool(app.state.ready))
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            timeouts = (settings.torchserve_timeout_seconds, settings.tfserving_timeout_seconds)
            await rpc_server.stop(grpc_server, grace=max(timeouts))  # calls in progress finish
            probe.cancel()
            storing.cancel()
            for task in (following, sweeping):
                if task is not None:
                    task.cancel()
            if metrics_server is not None:
                await asyncio.to_thread(metrics_server.shutdown)
                metrics_server.server_close()
            await asyncio.to_thread(watcher.stop)
            await shadow.drain()
            for backend in adapters.values():
                await backend.close()
            await asyncio.to_thread(registry.close)

    app = GatewayApp(
        title="Twin-stack model gateway",
        version="0.1.0",
        description="One API in front of TorchServe and TF Serving.",
        lifespan=lifespan,
        # GATEWAY_DOCS_ENABLED=false: no /docs, /redoc nor /openapi.json (404).
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    services = Services(
        settings=settings,
        router=router,
        registry=registry,
        shadow=shadow,
        rollouts=rollouts,
        guard=rollouts.guard,
        deployer=deployer,
        auth=Authenticator(load_tokens(settings)),
        decode_slots=DecodeSlots(settings.large_body_bytes, settings.large_decodes_max),
        inference_keys=InferenceKeys(settings),
        backend_guards={
            kind: BackendGuard(
                kind,
                max_inflight=settings.backend_max_inflight,
                # An agent-run stack's breakers are per replica (ReplicaPool); here only the cap.
                failure_threshold=0 if pool is not None and kind in pool.stacks else settings.breaker_failures,
                cooldown=settings.breaker_cooldown_seconds,
            )
            for kind in adapters
        },
    )
    app.state.services = services
    # The old loose attributes, for the modules not yet reading ``services_of`` (protocols, auth).
    for name in Services.__dataclass_fields__:
        setattr(app.state, name, getattr(services, name))
    app.state.ready = False

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        request.state.error = "BadRequest"
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return json_response({"error": "; ".join(parts) or "invalid request"}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path[:200]}"
        return json_response({"error": message}, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        request.state.error = "InternalError"
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response({"error": "internal error in the gateway; see its log"}, 500)

    app.include_router(inference_router())  # the inference routes, from the one route table
    app.include_router(tfserving_rest.router)
    app.include_router(oip.router)
    app.include_router(oip.models)
    app.include_router(admin_routes.router)

    scrape = metrics.scrape_registry()
    if settings.metrics_port is None:  # else only on the metrics port (started in the lifespan)

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            """Prometheus metrics of this gateway (every worker's, summed)."""
            return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)

    # Admin requests: token and body limit checked before any byte of the body is read.
    app.add_middleware(AdminGate, authenticator=services.auth, settings=settings)
    app.add_middleware(InferenceMetrics)
    app.add_middleware(RequestIdMiddleware)  # every response and log line has an ID
    # Inference without FastAPI's per-request work, with its own request ID and metrics.
    app.add_middleware(InferenceRoutes)
    if origins := settings.cors_origins:  # off unless configured; outermost, so preflights never reach a route
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID", OIP_BINARY_HEADER],
            expose_headers=[
                *("X-Model-Name", "X-Model-Version", "X-Model-Label", "X-Backend", "X-Request-ID"),
                OIP_BINARY_HEADER,
            ],
            max_age=600,
        )
    return app
