"""Two gateway replicas on one PostgreSQL registry change one TF Serving at the same time.

TF Serving's config reload replaces its whole model list, so each deploy sends "everything that
must stay loaded". Two replicas that each computed that list before the other's version was in
the registry would unload each other's version. The backend lock (a PostgreSQL advisory lock)
makes the second deploy wait, then read the registry with the first one's version in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from localstack import Ports, free_port

from tests.deploy.docker_stack import make_stack
from tests.e2e.conftest import STORE, copy_store
from tests.pgfixtures import postgres_url  # noqa: F401  (fixture)

TOKEN = "e2e-replicas-token-0123456789abcdef"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres_url):  # noqa: F811
    """The local backends and two gateway processes sharing one fresh PostgreSQL registry."""
    store = copy_store(tmp_path_factory.mktemp("replica-store"))
    env = {"GATEWAY_DATABASE_URL": postgres_url, "GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_BACKEND_PROBE_SECONDS": "1"}
    with make_stack(store, tmp_path_factory.mktemp("replica-stack"), Ports.free(), gateway_env=env) as stack:
        port = free_port()
        stack.start_gateway_process(port, name="replica")
        yield stack, [stack.gateway_url, f"http://127.0.0.1:{port}"]


def deploy(url: str, model: str, source: str, version: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--url", url, "deploy", model, source, "--version", str(version)],
        capture_output=True,
        text=True,
        env={**os.environ, "GATEWAY_ADMIN_TOKEN": TOKEN},
        timeout=600,
    )


def available_on_tfserving(stack, model: str) -> set[int]:
    r = httpx.get(f"{stack.tfserving_rest_url}/v1/models/{model}")
    return {int(s["version"]) for s in r.json()["model_version_status"] if s["state"] == "AVAILABLE"}


def test_two_replicas_deploying_to_tf_serving_at_once_both_end_up_loaded(replicas, tmp_path):
    stack, urls = replicas
    sources = {}
    for model in ("mlp", "cnn"):  # each model's TF Serving export, deployed again as version 7
        tf_version = next(v for v in sorted((STORE / model).iterdir()) if (v / "saved_model.pb").is_file())
        sources[model] = shutil.copytree(tf_version, tmp_path / model / "7")
    with ThreadPoolExecutor(2) as pool:
        runs = list(
            pool.map(
                lambda job: deploy(job[0], job[1], str(sources[job[1]]), 7),
                [(urls[0], "mlp"), (urls[1], "cnn")],
            )
        )
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "deployed"
    assert 7 in available_on_tfserving(stack, "mlp")
    assert 7 in available_on_tfserving(stack, "cnn")
    # Both replicas route both new versions (the registry told each of them).
    sample = {m: json.loads((sources[m] / "sample_input.json").read_text()) for m in sources}
    deadline = time.monotonic() + 30
    for url in urls:
        for model in ("mlp", "cnn"):
            while (
                r := httpx.post(f"{url}/v1/models/{model}/versions/7:predict", json=sample[model])
            ).status_code != 200:
                assert time.monotonic() < deadline, f"{url}: {model} v7 answered {r.status_code} {r.text}"
                time.sleep(0.2)
            assert r.headers["X-Backend"] == "tfserving"
