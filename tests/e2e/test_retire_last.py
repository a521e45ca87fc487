"""Retiring the last TF Serving version on the real local stack: the reload then carries an empty
model list, which the server accepts (no config at all would be INVALID_ARGUMENT)."""

from __future__ import annotations

import time

import httpx
import pytest
from localstack import Ports

from tests.deploy.docker_stack import make_stack
from tests.e2e.conftest import copy_store

TOKEN = "e2e-admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    """mlp version 1 on TorchServe (stable) and version 2, the only TF Serving version."""
    store = copy_store(tmp_path_factory.mktemp("last-store"), skip=("mlp/3", "cnn/1", "cnn/2"))
    env = {"GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_BACKEND_PROBE_SECONDS": "3600"}
    with make_stack(store, tmp_path_factory.mktemp("last-stack"), Ports.free(), gateway_env=env) as running:
        yield running


def test_retiring_the_last_tf_serving_version_unloads_it(small_stack):
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=small_stack.gateway_url, timeout=60, headers=admin) as gw:
        assert gw.post("/v1/models/mlp/versions/2:predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 200
        r = gw.post("/admin/models/mlp/versions/2/retire")
        assert r.json() == {"model": "mlp", "version": 2, "retired": True, "unloaded": True}
    # TF Serving unloads on its manager's next ticks after the reload returned (as the real
    # server does): wait for it, boundedly.
    deadline = time.monotonic() + 30
    while True:
        status = httpx.get(f"{small_stack.tfserving_rest_url}/v1/models/mlp/versions/2")
        body = status.json() if status.status_code == 200 else {}
        states = [s["state"] for s in body.get("model_version_status", [])]
        if status.status_code == 404 or states == ["END"]:
            break
        assert time.monotonic() < deadline, f"version 2 still loaded: {status.text}"
        time.sleep(0.1)
