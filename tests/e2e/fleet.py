"""Several replicas per stack behind one gateway, for the acceptance tests of issue 15: each replica
is a real backend process (TorchServe, or the TF Serving-compatible server) on its own empty,
replica-local model directory, with its own `gateway agent`; artifacts live in a real
S3-compatible server (moto), the registry in PostgreSQL, and the gateway (GATEWAY_AGENT_STACKS)
routes over whichever replicas the agents register."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from localstack import LocalStack, Ports, Service
from prometheus_client.parser import text_string_to_metric_families

from gateway.registry import RegistryStore
from tests.waiting import wait_until


class Member:
    """One backend replica and the agent beside it."""

    def __init__(self, root: Path, rid: str, kind: str, env: dict[str, str]) -> None:
        self.rid, self.kind = rid, kind
        self.dir = root / f"{rid}-local"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.backend = LocalStack(self.dir, root / f"{rid}-work", Ports.free(), start_gateway=False)
        if kind == "torchserve":
            management, inference = self.backend.torchserve_management_url, self.backend.torchserve_url
        else:
            management = inference = self.backend.tfserving_target
        argv = [sys.executable, "-m", "gateway.cli", "agent", "--stack", kind, "--management-url", management,
                "--inference-url", inference, "--replica-id", rid, "--model-dir", str(self.dir),
                "--poll-seconds", "1"]  # fmt: skip
        self.agent = Service(f"agent-{rid}", argv, root / f"agent-{rid}.log", env=env)

    def start(self) -> None:
        self.backend.start_backend(self.kind)
        self.agent.start()

    def kill(self) -> None:
        """SIGKILL the backend and the agent at once, as when a node dies."""
        services = [self.agent, *self.backend.services.values()]
        for service in services:
            if service.proc is not None:
                os.killpg(service.proc.pid, signal.SIGKILL)
        for service in services:
            service.stop(timeout=1)

    def stop(self) -> None:
        self.agent.stop()
        self.backend.stop()


class Fleet:
    """The replicas of both stacks, their registry and their artifact store."""

    def __init__(self, root: Path, registry_url: str, artifact_env: dict[str, str]) -> None:
        self.root = root
        self.registry = RegistryStore(registry_url)
        self.registry.migrate()
        self.env = {"GATEWAY_DATABASE_URL": registry_url, **artifact_env, "GATEWAY_DEPLOY_READY_TIMEOUT_SECONDS": "120",
                    "GATEWAY_AGENT_HEARTBEAT_SECONDS": "1"}  # fmt: skip
        self.members: dict[str, Member] = {}

    def add(self, rid: str, kind: str, start: bool = True) -> Member:
        member = self.members[rid] = Member(self.root, rid, kind, self.env)
        if start:
            member.start()
        return member

    def stop(self) -> None:
        for member in self.members.values():
            member.stop()
        self.registry.close()

    def states(self) -> dict[str, dict[tuple[str, int], tuple[str, str]]]:
        """Each registered replica's reports."""
        return {r.replica_id: {(v.model, v.version): (v.state, v.error) for v in r.versions}
                for r in self.registry.replicas()}  # fmt: skip

    def wait_ready(self, rids: list[str], model: str, version: int, deadline: float = 240.0) -> None:
        def reached() -> bool:
            states = self.states()
            return all(states.get(rid, {}).get((model, version), ("",))[0] == "ready" for rid in rids)

        try:
            wait_until(reached, f"{rids}: {model} v{version} ready", deadline, 0.5)
        except AssertionError as exc:
            logs = "\n".join(f"--- {rid}\n{self.members[rid].agent.log_tail(30)}" for rid in rids)
            raise AssertionError(f"{exc}; states {self.states()}; agent logs:\n{logs}") from None


def replica_calls(gateway_url: str, suffix: str = "_count") -> dict[str, float]:
    """gateway_replica_request_duration_seconds_count (or ``_sum``: seconds spent in calls) per
    replica id, from the gateway's /metrics."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_replica_request_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith(suffix):
                    counts[sample.labels["replica"]] = sample.value
    return counts


@dataclass
class Outcome:
    start: float
    seconds: float
    status: int  # 0: no answer (transport error)


class Load:
    """``clients`` threads posting ``body`` to ``url`` back to back until ``stop``."""

    def __init__(self, url: str, body: dict, clients: int = 4, timeout: float = 30.0) -> None:
        self.url, self.body, self.clients, self.timeout = url, body, clients, timeout
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    status = client.post(self.url, json=self.body).status_code
                except httpx.HTTPError:
                    status = 0
                with self._lock:
                    self.outcomes.append(Outcome(start, time.monotonic() - start, status))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.start >= moment]
