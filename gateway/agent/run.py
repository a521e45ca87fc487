"""``gateway agent``: build the agent from its command line and the settings, and run it until
SIGTERM or SIGINT, or, as a container's entry wrapper (``gateway agent ... -- <backend command>``,
gateway/agent/child.py), until the backend it started exits.

The registry (``GATEWAY_DATABASE_URL``) and the artifact store (``GATEWAY_ARTIFACT_*``) come from
the same settings as the gateway's; the replica's own addresses and storage from the command line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from gateway.agent.agent import Agent, AgentConfig
from gateway.agent.child import Child, exit_code, expand, host_name
from gateway.artifacts import open_store
from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.torchserve import TorchServeBackend
from gateway.core.kinds import Kind
from gateway.core.types import Backend
from gateway.registry import RegistryStore
from gateway.settings import Settings

log = logging.getLogger("gateway.agent")

# On SIGTERM/SIGINT the wrapper waits this long at most for the agent to deregister the replica,
# then this long more (one read of the replica table by the gateways, GATEWAY_REPLICA_POLL_SECONDS'
# default) before the backend gets the signal.
DRAIN_SECONDS = 5.0
DRAIN_PAUSE_SECONDS = 1.0


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


async def run_agent(config: AgentConfig, settings: Settings, management_url: str, command: Sequence[str] = ()) -> int:
    """Run one agent until SIGTERM or SIGINT; with a ``command``, start it first, and stop when it
    exits; on those signals the agent deregisters the replica first, then the command gets the
    signal. The exit code: the command's, else 0."""
    config.model_dir.mkdir(parents=True, exist_ok=True)
    child = Child(command) if command else None
    if child is not None:
        await child.start()
    registry = RegistryStore(settings.database_url)
    backend = make_backend(config.stack, management_url, config.address, config.model_dir, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signalled: list[int] = []
    drain = asyncio.Event()

    def on_signal(sig: int) -> None:
        """The agent stops (and deregisters the replica) first, then the backend gets the signal
        (in run_agent); a second signal goes to the backend at once."""
        stop.set()
        if child is not None and signalled:
            child.signal(sig)
        signalled.append(sig)
        drain.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    agent = asyncio.create_task(_agent(config, registry, settings, backend, stop))
    code = 0
    try:
        if child is None:
            await agent
            return 0
        exited = asyncio.create_task(child.wait())
        draining = asyncio.create_task(drain.wait())
        await asyncio.wait([agent, exited, draining], return_when=asyncio.FIRST_COMPLETED)
        draining.cancel()
        if signalled and not exited.done():
            # A drain: gateways stop routing to the replica at their next read of the registry,
            # before its backend stops (bounded: the agent may be in the middle of a load).
            await asyncio.wait([agent], timeout=DRAIN_SECONDS)
            await asyncio.sleep(DRAIN_PAUSE_SECONDS)
        elif not exited.done():  # the agent ended on its own (it should not): take the backend down with it
            log.error("the agent stopped before the backend; stopping the backend")
        code = exit_code(await child.stop(signalled[0] if signalled else signal.SIGTERM))
        log.info("the backend exited with %d", code)
        return code
    finally:
        stop.set()
        await asyncio.gather(agent, return_exceptions=True)
        if child is not None and child.process is not None and child.process.returncode is None:
            await child.stop()


async def _agent(
    config: AgentConfig, registry: RegistryStore, settings: Settings, backend: Backend, stop: asyncio.Event
) -> None:
    await backend.start()
    try:
        await Agent(config, registry, open_store(settings), backend).run(stop)
    finally:
        await backend.close()
        await asyncio.to_thread(registry.close)


def agent_config(
    settings: Settings,
    stack: Kind,
    inference_url: str,
    replica_id: str | None,
    model_dir: str | None,
    host: str | None,
    poll_seconds: float,
) -> AgentConfig:
    """The agent's configuration. ``{host}`` and ``{ip}`` in ``inference_url`` and ``replica_id``
    become this machine's host name and its address; the replica id defaults to the host name
    (``$POD_NAME`` in Kubernetes, the container's host name in compose)."""
    host = host or host_name()
    return AgentConfig(
        stack=stack,
        replica_id=expand(replica_id or "{host}", host),
        address=expand(inference_url, host),
        host=host,
        model_dir=Path(model_dir).resolve() if model_dir else settings.model_store.resolve(),
        poll_seconds=poll_seconds,
        heartbeat_seconds=settings.agent_heartbeat_seconds,
        ready_timeout_seconds=settings.deploy_ready_timeout_seconds,
        discovery_grace_seconds=settings.backend_discovery_grace_seconds,
        retry_failed_seconds=settings.agent_retry_failed_seconds,
    )


def main(
    stack: Kind,
    management_url: str,
    inference_url: str,
    replica_id: str | None,
    model_dir: str | None,
    host: str | None,
    poll_seconds: float,
    command: Sequence[str] = (),
) -> int:
    """The ``gateway agent`` command; its exit code is the backend command's, if one was given."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    config = agent_config(settings, stack, inference_url, replica_id, model_dir, host, poll_seconds)
    return asyncio.run(run_agent(config, settings, management_url, command))
