"""``gateway agent``: build the agent from its command line and the settings, and run it until
SIGTERM or SIGINT.

The registry (``GATEWAY_DATABASE_URL``) and the artifact store (``GATEWAY_ARTIFACT_*``) come from
the same settings as the gateway's; the replica's own addresses and storage from the command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from gateway.agent.agent import Agent, AgentConfig
from gateway.artifacts import open_store
from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.torchserve import TorchServeBackend
from gateway.core.kinds import Kind
from gateway.core.types import Backend
from gateway.registry import RegistryStore
from gateway.settings import Settings


def make_backend(stack: Kind, management_url: str, inference_url: str, model_dir: Path, settings: Settings) -> Backend:
    """The stack's adapter, pointed at this replica's management API and its local storage.

    No start-up file is written: the agent itself loads again what a restarted backend lacks.
    """
    if stack == "torchserve":
        return TorchServeBackend(
            inference_url,
            management_url,
            store=model_dir,
            workers=settings.torchserve_workers,
            load_timeout=settings.deploy_ready_timeout_seconds,
        )
    # TF Serving's management calls (HandleReloadConfigRequest, GetModelStatus) are gRPC.
    target = management_url.removeprefix("grpc://")
    return TFServingBackend(target, base_path=str(model_dir), load_timeout=settings.deploy_ready_timeout_seconds)


async def run_agent(config: AgentConfig, settings: Settings, management_url: str) -> None:
    """Run one agent until SIGTERM or SIGINT."""
    config.model_dir.mkdir(parents=True, exist_ok=True)
    registry = RegistryStore(settings.database_url)
    backend = make_backend(config.stack, management_url, config.address, config.model_dir, settings)
    await backend.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Agent(config, registry, open_store(settings), backend).run(stop)
    finally:
        await backend.close()
        await asyncio.to_thread(registry.close)


def main(
    stack: Kind,
    management_url: str,
    inference_url: str,
    replica_id: str,
    model_dir: str | None,
    host: str | None,
    poll_seconds: float,
) -> int:
    """The ``gateway agent`` command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    config = AgentConfig(
        stack=stack,
        replica_id=replica_id,
        address=inference_url,
        host=host or os.environ.get("POD_NAME") or socket.gethostname(),
        model_dir=Path(model_dir).resolve() if model_dir else settings.model_store.resolve(),
        poll_seconds=poll_seconds,
        ready_timeout_seconds=settings.deploy_ready_timeout_seconds,
        discovery_grace_seconds=settings.backend_discovery_grace_seconds,
    )
    asyncio.run(run_agent(config, settings, management_url))
    return 0
