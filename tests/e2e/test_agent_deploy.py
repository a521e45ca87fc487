"""The product path of issue 15's first part, end to end: a real gateway (with its own backends)
stores the versions it adopted and the ones `gateway deploy` brings in a real S3-compatible server
(moto), and the agents beside another TorchServe and TF Serving replica pull, load and serve them;
`gateway retire` has the agent unload it again."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from localstack import Ports

from gateway.artifacts import manifest_of
from tests.deploy.docker_stack import make_stack
from tests.e2e.agent_stack import Replicas, sample
from tests.e2e.conftest import STORE, copy_store
from tests.pgfixtures import create_database, drop_database
from tests.s3fixtures import moto_endpoint  # noqa: F401  (fixture)

TOKEN = "e2e-agent-deploy-token-0123456789"
BUCKET = "deployed-artifacts"


@pytest.fixture(scope="module")
def product(tmp_path_factory, moto_endpoint):  # noqa: F811
    assert httpx.put(f"{moto_endpoint}/{BUCKET}").status_code == 200
    url = create_database()
    replicas = Replicas(tmp_path_factory.mktemp("deploy-agents"), url, moto_endpoint, bucket=BUCKET)
    env = {**replicas.env, "GATEWAY_ADMIN_TOKEN": TOKEN}
    store = copy_store(tmp_path_factory.mktemp("deploy-store"), skip=("mlp/3",))
    try:
        with make_stack(store, tmp_path_factory.mktemp("deploy-stack"), Ports.free(), gateway_env=env) as stack:
            replicas.start()
            yield stack, replicas
    finally:
        replicas.stop()
        drop_database(url)


def cli(stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--url", stack.gateway_url, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "GATEWAY_ADMIN_TOKEN": TOKEN},
        timeout=600,
    )


def test_the_versions_the_gateway_adopted_at_start_reach_the_replicas(product):
    _stack, replicas = product
    for rid, model, version in (("ts-0", "mlp", 1), ("ts-0", "cnn", 1), ("tf-0", "mlp", 2), ("tf-0", "cnn", 2)):
        assert replicas.wait_state(rid, model, version, "ready") == ("ready", "")
    body, expected = sample("mlp", 1)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 1, body), expected, atol=1e-5)
    body, expected = sample("mlp", 2)
    np.testing.assert_allclose(replicas.tfserving_predict("mlp", 2, body), expected, atol=1e-5)


def test_a_deployed_version_reaches_the_replicas_through_the_artifact_store(product):
    stack, replicas = product
    done = cli(stack, "deploy", "mlp", str(STORE / "mlp" / "3"), "--version", "3")
    assert done.returncode == 0, done.stderr

    stored = asyncio.run(replicas.artifacts.manifest("mlp", 3))
    assert stored == manifest_of("mlp", 3, STORE / "mlp" / "3")
    assert replicas.wait_state("ts-0", "mlp", 3, "ready") == ("ready", "")
    body, expected = sample("mlp", 3)
    np.testing.assert_allclose(replicas.torchserve_predict("mlp", 3, body), expected, atol=1e-5)
    assert (replicas.dirs["torchserve"] / "mlp" / "3" / "mlp.mar").read_bytes() == (
        STORE / "mlp" / "3" / "mlp.mar"
    ).read_bytes()

    status = cli(stack, "status", "mlp")
    assert status.returncode == 0, status.stderr
    (ts,) = [r for r in json.loads(status.stdout)["replicas"] if r["replica"] == "ts-0"]
    assert {"model": "mlp", "version": 3, "state": "ready"}.items() <= next(
        v for v in ts["versions"] if v["version"] == 3
    ).items()


def test_a_retired_version_is_unloaded_from_the_replicas(product):
    stack, replicas = product
    done = cli(stack, "retire", "mlp", "3")
    assert done.returncode == 0, done.stderr
    replicas.wait_state("ts-0", "mlp", 3, None)
    assert httpx.get(f"{replicas.ts.torchserve_management_url}/models/mlp/3").status_code == 404
    assert not (replicas.dirs["torchserve"] / "mlp" / "3").exists()
