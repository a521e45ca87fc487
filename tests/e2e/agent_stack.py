"""Backend replicas with their agents, for the e2e tests of issue 15: a real TorchServe and the
TF Serving-compatible server, each on its own replica-local model directory, each with its own
`gateway agent` process; artifacts in a real S3-compatible server; the registry in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import numpy as np
from localstack import LocalStack, Ports, Service

from gateway.artifacts.s3 import S3ArtifactStore
from gateway.registry import RegistryStore
from tests.e2e.conftest import STORE
from tests.waiting import wait_until

S3_BUCKET = "agent-artifacts"
DEADLINE = 120.0


def status_of(url: str) -> int:
    """The status ``url`` answers a GET with, 0 while nothing listens."""
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


class Replicas:
    """The two backend replicas, their agents, the registry and the artifact store."""

    def __init__(
        self, root: Path, registry_url: str, endpoint: str, bucket: str = S3_BUCKET, agent_registry_url: str = ""
    ) -> None:
        self.registry = RegistryStore(registry_url)
        self.registry.migrate()
        self.env = {
            "GATEWAY_DATABASE_URL": registry_url,
            "GATEWAY_ARTIFACT_STORE": "s3",
            "GATEWAY_ARTIFACT_S3_ENDPOINT": endpoint,
            "GATEWAY_ARTIFACT_S3_BUCKET": bucket,
            "GATEWAY_ARTIFACT_S3_PREFIX": "models",
        }
        self.artifacts = S3ArtifactStore(bucket, prefix="models", endpoint=endpoint)
        self.dirs = {"torchserve": root / "ts-local", "tfserving": root / "tf-local"}
        for path in self.dirs.values():
            path.mkdir()
        # One LocalStack per replica, each started with one service only, on its own directory.
        self.ts = LocalStack(self.dirs["torchserve"], root / "ts-work", Ports.free(), start_gateway=False)
        self.tf = LocalStack(self.dirs["tfserving"], root / "tf-work", Ports.free(), start_gateway=False)
        env = {**self.env, "GATEWAY_DEPLOY_READY_TIMEOUT_SECONDS": "60"}
        if agent_registry_url:  # the agents reach the registry another way (through a proxy a test can cut)
            env["GATEWAY_DATABASE_URL"] = agent_registry_url
        self.agents = {
            "torchserve": self._agent(root, "ts-0", "torchserve", self.ts.torchserve_management_url,
                                      self.ts.torchserve_url, env),
            "tfserving": self._agent(root, "tf-0", "tfserving", self.tf.tfserving_target,
                                     self.tf.tfserving_target, env),
        }  # fmt: skip

    def _agent(self, root: Path, rid: str, stack: str, management: str, inference: str, env: dict) -> Service:
        argv = [sys.executable, "-m", "gateway.cli", "agent", "--stack", stack, "--management-url", management,
                "--inference-url", inference, "--replica-id", rid, "--model-dir", str(self.dirs[stack]),
                "--poll-seconds", "1"]  # fmt: skip
        return Service(f"agent-{rid}", argv, root / f"agent-{rid}.log", env=env)

    def start(self) -> None:
        self.ts.start_backend("torchserve")
        self.tf.start_backend("tfserving")
        for agent in self.agents.values():
            agent.start()

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        self.ts.stop()
        self.tf.stop()
        self.registry.close()

    # --- what the registry says ----------------------------------------------------------------
    def states(self, rid: str) -> dict[tuple[str, int], tuple[str, str]]:
        for replica in self.registry.replicas():
            if replica.replica_id == rid:
                return {(v.model, v.version): (v.state, v.error) for v in replica.versions}
        return {}

    def wait_state(self, rid: str, model: str, version: int, state: str | None) -> tuple[str, str] | None:
        def reached() -> bool:
            found = self.states(rid).get((model, version))
            return (found is None) if state is None else (found is not None and found[0] == state)

        try:
            wait_until(reached, f"{rid}: {model} v{version} {state}", DEADLINE, 0.25)
        except AssertionError as exc:
            logs = "\n".join(f"--- {n}\n{a.log_tail(40)}" for n, a in self.agents.items())
            raise AssertionError(f"{exc}; states {self.states(rid)}; agent logs:\n{logs}") from None
        return self.states(rid).get((model, version))

    def desire(self, model: str, version: int, backend: str, state: str = "available") -> None:
        with self.registry.transaction(actor="test", action="desire", model=model) as tx:
            tx.ensure_model(model)
            tx.upsert_version(model, version, backend, f"{model}/{version}", state)

    def put(self, model: str, version: int, directory: Path) -> None:
        asyncio.run(self.artifacts.put(model, version, directory))

    # --- what the backends answer ----------------------------------------------------------------
    def torchserve_predict(self, model: str, version: int, body: dict) -> np.ndarray:
        r = httpx.post(f"{self.ts.torchserve_url}/predictions/{model}/{version}", json=body, timeout=30)
        assert r.status_code == 200, r.text
        return np.asarray(r.json()["predictions"])

    def tfserving_predict(self, model: str, version: int, body: dict) -> np.ndarray:
        url = f"{self.tf.tfserving_rest_url}/v1/models/{model}/versions/{version}:predict"
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 200, r.text
        return np.asarray(r.json()["predictions"])


def sample(model: str, version: int) -> tuple[dict, np.ndarray]:
    path = STORE / model / str(version)
    expected = json.loads((path / "sample_output.json").read_text())
    return json.loads((path / "sample_input.json").read_text()), np.asarray(expected["predictions"])
