"""The Docker mode of the end-to-end stack (tests/deploy/docker_stack.py): what it would start, and
that without a Docker engine it skips, saying where it looked. Starting containers is
`make test-docker`'s business, on a machine with an engine."""

from __future__ import annotations

import pytest
from localstack import LocalStack, Ports

from tests.deploy.conftest import TF_MONITORING, TS_CONFIG
from tests.deploy.docker_stack import CONTAINER_STORE, DockerStack, backend_images, make_stack
from tests.fakes import make_version


@pytest.fixture
def store(tmp_path):
    store = tmp_path / "store"
    make_version(store, "mlp", 1, "torchserve", {})
    make_version(store, "mlp", 2, "tfserving", {})
    return store


def test_make_stack_follows_the_environment(store, tmp_path, monkeypatch):
    monkeypatch.delenv("GATEWAY_E2E_BACKENDS", raising=False)
    assert type(make_stack(store, tmp_path / "a", Ports.free())) is LocalStack
    monkeypatch.setenv("GATEWAY_E2E_BACKENDS", "docker")
    assert type(make_stack(store, tmp_path / "b", Ports.free())) is DockerStack
    monkeypatch.setenv("GATEWAY_E2E_BACKENDS", "kubernetes")
    with pytest.raises(ValueError, match="expected 'local' or 'docker'"):
        make_stack(store, tmp_path / "c")


def test_it_has_the_attributes_the_e2e_tests_use(store, tmp_path):
    ports = Ports.free()
    local, docker_stack = LocalStack(store, tmp_path / "l", ports), DockerStack(store, tmp_path / "d", ports, gpu=False)
    for attribute in ("gateway_url", "torchserve_url", "torchserve_management_url", "torchserve_metrics_url",
                      "tfserving_target", "tfserving_rest_url", "store", "ports", "services", "versions"):  # fmt: skip
        assert getattr(docker_stack, attribute) == getattr(local, attribute), attribute
    assert callable(docker_stack.start_gateway_process) and callable(docker_stack.stop)


def test_the_backends_run_the_deployments_images_and_configs(store, tmp_path, compose, compose_cpu):
    stack = DockerStack(store, tmp_path / "w", Ports.free(), gpu=False)
    specs = stack.container_specs()
    assert backend_images(gpu=False) == {n: compose_cpu["services"][n]["image"] for n in ("torchserve", "tfserving")}
    assert backend_images(gpu=True) == {n: compose["services"][n]["image"] for n in ("torchserve", "tfserving")}
    ts, tf = specs["torchserve"], specs["tfserving"]
    assert ts["image"] == compose_cpu["services"]["torchserve"]["image"]
    assert ts["volumes"][str(TS_CONFIG)]["bind"] == "/etc/torchserve/config.properties"
    assert ts["volumes"][str(stack.store)] == {"bind": CONTAINER_STORE, "mode": "rw"}
    assert ts["ports"] == {
        "8080/tcp": ("127.0.0.1", stack.ports.ts_inference),
        "8081/tcp": ("127.0.0.1", stack.ports.ts_management),
        "8082/tcp": ("127.0.0.1", stack.ports.ts_metrics),
    }
    assert tf["volumes"][str(TF_MONITORING)]["bind"] == "/etc/tfserving/monitoring.config"
    assert tf["ports"] == {
        "8500/tcp": ("127.0.0.1", stack.ports.tf_grpc),
        "8501/tcp": ("127.0.0.1", stack.ports.tf_rest),
    }
    assert f'base_path: "{CONTAINER_STORE}/mlp"' in stack.tfserving_model_config()
    assert stack.gateway_environment()["GATEWAY_TFSERVING_MODEL_BASE_PATH"] == CONTAINER_STORE
    assert "device_requests" not in ts


def test_without_a_docker_engine_it_skips_and_says_where_it_looked(store, tmp_path, monkeypatch):
    socket = tmp_path / "no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    stack = DockerStack(store, tmp_path / "w", Ports.free(), gpu=False)
    with pytest.raises(pytest.skip.Exception, match="DOCKER_HOST") as skipped:
        stack.start()
    assert str(socket) in str(skipped.value) and "DOCKER_HOST" in str(skipped.value)
    assert stack.services == {}
