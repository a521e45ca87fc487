"""An agent beside each backend replica (issue 15): a real TorchServe and the TF Serving-compatible
server, each with its own replica-local model directory and its own `gateway agent` process,
artifacts in a real S3-compatible server (moto, its own process), the registry on PostgreSQL.

The tests run in order on one set of processes: what a test leaves is where the next starts.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from localstack import LocalStack, Ports, Service

from gateway.artifacts.s3 import S3ArtifactStore
from gateway.registry import RegistryStore
from tests.e2e.conftest import STORE, _ensure_models
from tests.pgfixtures import postgres_url  # noqa: F401  (fixture)
from tests.s3fixtures import moto_endpoint  # noqa: F401  (fixture)
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

    def __init__(self, root: Path, registry_url: str, endpoint: str) -> None:
        self.registry = RegistryStore(registry_url)
        self.registry.migrate()
        self.artifacts = S3ArtifactStore(S3_BUCKET, prefix="models", endpoint=endpoint)
        self.dirs = {"torchserve": root / "ts-local", "tfserving": root / "tf-local"}
        for path in self.dirs.values():
            path.mkdir()
        # One LocalStack per replica, each started with one service only, on its own directory.
        self.ts = LocalStack(self.dirs["torchserve"], root / "ts-work", Ports.free(), start_gateway=False)
        self.tf = LocalStack(self.dirs["tfserving"], root / "tf-work", Ports.free(), start_gateway=False)
        env = {
            "GATEWAY_DATABASE_URL": registry_url,
            "GATEWAY_ARTIFACT_STORE": "s3",
            "GATEWAY_ARTIFACT_S3_ENDPOINT": endpoint,
            "GATEWAY_ARTIFACT_S3_BUCKET": S3_BUCKET,
            "GATEWAY_ARTIFACT_S3_PREFIX": "models",
            "GATEWAY_DEPLOY_READY_TIMEOUT_SECONDS": "60",
        }
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
        ts = self.ts._torchserve()
        self.ts.services["torchserve"] = ts
        ts.start()
        tf = self.tf._tfserving()
        self.tf.services["tfserving"] = tf
        tf.start()
        ts.wait_until(lambda: status_of(f"{self.ts.torchserve_url}/ping") == 200, 240, "answering /ping")
        tf.wait_until(lambda: status_of(f"{self.tf.tfserving_rest_url}/v1/models/none") == 404, 240, "up")
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


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres_url, moto_endpoint):  # noqa: F811
    _ensure_models()
    assert httpx.put(f"{moto_endpoint}/{S3_BUCKET}").status_code == 200
    r = Replicas(tmp_path_factory.mktemp("agents"), postgres_url, moto_endpoint)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def sample(model: str, version: int) -> tuple[dict, np.ndarray]:
    path = STORE / model / str(version)
    expected = json.loads((path / "sample_output.json").read_text())
    return json.loads((path / "sample_input.json").read_text()), np.asarray(expected["predictions"])


def test_a_desired_version_becomes_ready_on_its_replica_and_answers(replicas):
    replicas.put("mlp", 1, STORE / "mlp" / "1")
    replicas.put("mlp", 2, STORE / "mlp" / "2")
    replicas.desire("mlp", 1, "torchserve")
    replicas.desire("mlp", 2, "tfserving")

    assert replicas.wait_state("ts-0", "mlp", 1, "ready") == ("ready", "")
    assert replicas.wait_state("tf-0", "mlp", 2, "ready") == ("ready", "")
    body, expected = sample("mlp", 1)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)
    body, expected = sample("mlp", 2)
    np.testing.assert_allclose(replicas.tfserving_predict("mlp", 2, body), expected, atol=1e-5)
    # Pulled into each replica's own directory, from the bucket (the S3 store's layout, not the store).
    assert (replicas.dirs["torchserve"] / "mlp" / "1" / "mlp.mar").is_file()
    assert (replicas.dirs["tfserving"] / "mlp" / "2" / "saved_model.pb").is_file()
    assert not (replicas.dirs["torchserve"] / "mlp" / "2").exists()
    hosts = {r.replica_id: (r.stack, r.address) for r in replicas.registry.replicas()}
    assert hosts == {
        "ts-0": ("torchserve", replicas.ts.torchserve_url),
        "tf-0": ("tfserving", replicas.tf.tfserving_target),
    }


def test_a_second_version_loads_beside_the_first_and_a_removed_one_is_unloaded(replicas):
    replicas.put("mlp", 3, STORE / "mlp" / "3")
    replicas.desire("mlp", 3, "torchserve")
    replicas.wait_state("ts-0", "mlp", 3, "ready")
    body, expected = sample("mlp", 3)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 3, body), expected, atol=1e-5)

    replicas.desire("mlp", 3, "torchserve", state="retired")
    replicas.wait_state("ts-0", "mlp", 3, None)
    wait_until(lambda: httpx.get(f"{replicas.ts.torchserve_management_url}/models/mlp/3").status_code == 404,
               "mlp v3 unregistered from TorchServe", 30, 0.25)  # fmt: skip
    assert not (replicas.dirs["torchserve"] / "mlp" / "3").exists()
    body, expected = sample("mlp", 1)  # the other version is untouched
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)


@pytest.mark.parametrize("stack", ["torchserve", "tfserving"])
def test_a_restarted_backend_is_converged_again_by_its_agent(replicas, stack):
    if stack == "torchserve":
        replicas.ts.restart_torchserve()
        rid, version, predict = "ts-0", 1, replicas.torchserve_predict
        status = f"{replicas.ts.torchserve_management_url}/models/mlp/1"
    else:
        replicas.tf.restart_tfserving()
        rid, version, predict = "tf-0", 2, replicas.tfserving_predict
        status = f"{replicas.tf.tfserving_rest_url}/v1/models/mlp/versions/2"
    # It came back empty (no start-up file lists the version); the agent loads it again.
    body, expected = sample("mlp", version)

    def answers() -> bool:
        return status_of(status) == 200 and httpx.post(
            f"{replicas.ts.torchserve_url}/predictions/mlp/1" if stack == "torchserve"
            else f"{replicas.tf.tfserving_rest_url}/v1/models/mlp/versions/2:predict", json=body, timeout=30,
        ).status_code == 200  # fmt: skip

    wait_until(answers, f"{stack} serving mlp v{version} again", DEADLINE, 0.5)
    np.testing.assert_allclose(predict("mlp", version, body), expected, atol=1e-5)
    assert replicas.wait_state(rid, "mlp", version, "ready") == ("ready", "")


def test_a_broken_artifact_is_reported_failed_and_nothing_else_changes(replicas, tmp_path):
    broken = tmp_path / "9"
    broken.mkdir()
    (broken / "mlp.mar").write_bytes(b"this is not a zip archive")
    for name in ("signature.json", "sample_input.json", "sample_output.json"):
        (broken / name).write_bytes((STORE / "mlp" / "1" / name).read_bytes())
    replicas.put("mlp", 9, broken)
    replicas.desire("mlp", 9, "torchserve")

    _state, error = replicas.wait_state("ts-0", "mlp", 9, "failed")
    assert "torchserve register mlp v9" in error, error
    assert httpx.get(f"{replicas.ts.torchserve_management_url}/models/mlp/9").status_code == 404
    assert replicas.states("ts-0")[("mlp", 1)] == ("ready", "")
    assert replicas.states("tf-0") == {("mlp", 2): ("ready", "")}
    body, expected = sample("mlp", 1)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)
    body, expected = sample("mlp", 2)
    np.testing.assert_allclose(replicas.tfserving_predict("mlp", 2, body), expected, atol=1e-5)
