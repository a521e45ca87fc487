"""The project's compose stack on a real Docker engine, end to end through the gateway.

Locally built look-alikes stand in for the official backend images (what that does and does not
prove: docs/deployment.md); each backend runs as two replicas (``--scale``), each with its agent.
The store is seeded without ``mlp`` v3 (TorchServe) and ``cnn`` v2 (TF Serving); the tests deploy
them, and ``mlp`` v4 (mlp v2's SavedModel under a new number: a new version of a model TF Serving
already serves), then canary, promote, roll back and retire, and restart each backend's
containers. Tests run in file order and build on each other's state, as an operator's session
does; what is loaded is checked on every replica.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from collections import Counter

import numpy as np
import pytest

from tests.compose import images
from tests.compose.conftest import DEPLOYED_LATER, PROJECT, REPLICAS, STORE, ComposeStack

# The ports each replica opens to the compose network (inference, metrics; TF Serving's gRPC port
# also carries its ModelService); TorchServe's management API listens on the container's loopback only.
BACKEND_PORTS = {"torchserve": (8080, 8082), "tfserving": (8500, 8501)}
LOOPBACK_ONLY = {"torchserve": (8081,)}
RESTART_DEADLINE_S = 420.0
# An agent converges within seconds of a change; the bound only turns a hang into a message.
CONVERGE_DEADLINE_S = 120.0
INTERNAL, EDGE = f"{PROJECT}_backend", f"{PROJECT}_edge"


def sample(model: str) -> dict:
    return json.loads((STORE / model / "1" / "sample_input.json").read_text())


def expected(model: str, version: int) -> list:
    return json.loads((STORE / model / str(version) / "sample_output.json").read_text())["predictions"]


def tar_of(model: str, version: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(STORE / model / str(version), arcname=f"{model}-{version}")
    return buffer.getvalue()


def predict(gateway, model: str, version: int | None = None, label: str | None = None):
    where = f"/versions/{version}" if version else f"/labels/{label}" if label else ""
    return gateway.post(f"/v1/models/{model}{where}:predict", json=sample(model))


def deploy(gateway, model: str, source_version: int, version: int, canary: float | None = None) -> dict:
    params: dict[str, float | int] = {"version": version}
    if canary is not None:
        params["canary"] = canary
    r = gateway.post(f"/admin/models/{model}/deploy", params=params, content=tar_of(model, source_version))
    assert r.status_code == 200, r.text
    return r.json()


def status(gateway, model: str) -> dict:
    r = gateway.get(f"/admin/models/{model}")
    assert r.status_code == 200, r.text
    return r.json()["models"][0]


def torchserve_versions(stack: ComposeStack, model: str, index: int = 1) -> set[str]:
    """The versions TorchServe replica ``index`` has registered, from its management API inside
    its container."""
    code, body = stack.http_inside("torchserve", 8081, f"/models/{model}/all", index)
    if code == 404:
        return set()
    assert code == 200, (code, body)
    return {entry["modelVersion"] for entry in json.loads(body)}


def tfserving_available(stack: ComposeStack, model: str, index: int = 1) -> set[int]:
    """The versions TF Serving replica ``index`` reports AVAILABLE, from its REST status API
    inside its container."""
    code, body = stack.http_inside("tfserving", 8501, f"/v1/models/{model}", index)
    if code == 404:
        return set()
    assert code == 200, (code, body)
    return {int(v["version"]) for v in json.loads(body)["model_version_status"] if v["state"] == "AVAILABLE"}


# Each process's command line, one a line, from /proc.
PROCESSES = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"


def on_every_replica(stack: ComposeStack, loaded, model: str) -> list:
    """What ``loaded`` (torchserve_versions or tfserving_available) finds on each replica."""
    return [loaded(stack, model, index) for index in range(1, REPLICAS + 1)]


def converges(stack: ComposeStack, loaded, model: str, want: set) -> None:
    """Until every replica holds exactly ``want`` of ``model`` (agents converge asynchronously)."""
    deadline = time.monotonic() + CONVERGE_DEADLINE_S
    while (got := on_every_replica(stack, loaded, model)) != [want] * REPLICAS:
        assert time.monotonic() < deadline, f"{model}: the replicas hold {got}, not {sorted(want)} each"
        time.sleep(0.5)


def spread(gateway, model: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        r = predict(gateway, model)
        assert r.status_code == 200, r.text
        seen[r.headers["X-Model-Version"]] += 1
    return seen


def test_the_stack_comes_up_healthy_from_the_projects_compose_files(compose_stack):
    init = compose_stack.inspect("model-init")["State"]
    assert (init["Status"], init["ExitCode"]) == ("exited", 0)
    for service in ("postgres", "gateway"):
        assert compose_stack.health(service) == "healthy", service
    for service in ("torchserve", "tfserving"):
        containers = compose_stack.containers(service)
        assert len(containers) == REPLICAS, (service, containers)
        for container in containers:
            assert compose_stack.health(service, container) == "healthy", (service, container)
            info = compose_stack.inspect(service, container)
            # The agent is the entry wrapper; the server its child (the compose file's command after --).
            assert info["Config"]["Entrypoint"] == ["/opt/agent/bin/gateway", "agent"]
            assert info["HostConfig"]["Init"] is True
    # The official images' identities, as the compose file relies on them: the agent runs as the
    # server's own user, and the agent's Python stays out of the server's PATH.
    ts = compose_stack.inspect("torchserve", compose_stack.containers("torchserve")[0])
    assert ts["Config"]["User"] == "model-server"
    assert compose_stack.compose("exec", "-T", "torchserve", "id", "-u").stdout.strip() == "1000"
    assert "/home/venv/bin" in next(e for e in ts["Config"]["Env"] if e.startswith("PATH="))
    assert "/opt/agent" not in next(e for e in ts["Config"]["Env"] if e.startswith("PATH="))
    # In each container the agent runs with the server as its child (from /proc: TF Serving's image has no ps).
    for service, server in (
        ("torchserve", "org.pytorch.serve.ModelServer"),
        ("tfserving", "--model_config_file=/opt/agent/etc/tfserving-empty.config"),
    ):
        for index in range(1, REPLICAS + 1):
            done = compose_stack.compose("exec", "-T", "--index", str(index), service, "bash", "-c", PROCESSES)
            assert "gateway agent --stack=" + service in done.stdout and server in done.stdout, (service, done.stdout)


def test_inference_on_both_stacks(gateway):
    for model, version, backend in (("mlp", 1, "torchserve"), ("mlp", 2, "tfserving"), ("cnn", 1, "torchserve")):
        r = predict(gateway, model, version)
        assert r.status_code == 200, r.text
        assert (r.headers["X-Model-Version"], r.headers["X-Backend"]) == (str(version), backend)
        np.testing.assert_allclose(r.json()["predictions"], expected(model, version), atol=1e-5)
    # Open Inference Protocol, no version named: the stable label.
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": sample("mlp")["instances"][0]}]}
    r = gateway.post("/v2/models/mlp/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["X-Model-Version"] == "1"
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], expected("mlp", 1)[0], atol=1e-5)


def test_grpc_doors_on_both_stacks(compose_stack):
    """The published gRPC port answers an unchanged TF Serving client and the Triton gRPC client,
    on a TorchServe and a TF Serving version, through the project's compose files."""
    import grpc
    import tensorflow as tf
    import tritonclient.grpc as triton
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    target = f"127.0.0.1:{compose_stack.grpc_port}"
    x = np.array(sample("mlp")["instances"], dtype=np.float32)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for version in (1, 2):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mlp"
            request.model_spec.version.value = version
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
            response = stub.Predict(request, timeout=60)
            got = tf.make_ndarray(response.outputs["probabilities"])
            np.testing.assert_allclose(got, expected("mlp", version), atol=1e-5)
            assert response.model_spec.version.value == version
    client = triton.InferenceServerClient(target)
    try:
        assert client.is_server_live() and client.is_server_ready()
        for version in ("1", "2"):
            tensor = triton.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer("mlp", [tensor], model_version=version, client_timeout=60)
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected("mlp", int(version)), atol=1e-5)
    finally:
        client.close()


def test_the_seeded_store_lacks_what_the_tests_deploy(gateway):
    for name in DEPLOYED_LATER:
        model, version = name.split("/")
        assert int(version) not in [v["version"] for v in status(gateway, model)["versions"]], name


def test_deploy_a_new_version_on_each_stack(gateway, compose_stack):
    done = deploy(gateway, "mlp", 3, 3, canary=50)
    assert (done["backend"], done["status"], done["canary"]) == ("torchserve", "deployed", 50.0)
    done = deploy(gateway, "cnn", 2, 2)
    assert (done["backend"], done["status"]) == ("tfserving", "deployed")
    # A new version of a model TF Serving already serves: found by its file-system poll.
    done = deploy(gateway, "mlp", 2, 4)
    assert (done["backend"], done["status"]) == ("tfserving", "deployed")
    for model, version in (("mlp", 3), ("cnn", 2), ("mlp", 4)):
        r = predict(gateway, model, version)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected(model, 2 if version == 4 else version), atol=1e-4)
    # On every replica once the deploy answered (min_ready: all replicas).
    assert on_every_replica(compose_stack, torchserve_versions, "mlp") == [{"1", "3"}] * REPLICAS
    assert on_every_replica(compose_stack, tfserving_available, "mlp") == [{2, 4}] * REPLICAS
    assert on_every_replica(compose_stack, tfserving_available, "cnn") == [{2}] * REPLICAS


def test_canary_promote_rollback(gateway):
    # 50 % to the canary: 60 calls all on one side would happen once in 2**59 runs.
    assert set(spread(gateway, "mlp", 60)) == {"1", "3"}
    assert predict(gateway, "mlp", label="canary").headers["X-Model-Version"] == "3"

    r = gateway.post("/admin/models/mlp/promote", json={})
    assert r.status_code == 200, r.text
    assert spread(gateway, "mlp", 10) == Counter({"3": 10})
    np.testing.assert_allclose(predict(gateway, "mlp").json()["predictions"], expected("mlp", 3), atol=1e-5)

    r = gateway.post("/admin/models/mlp/rollback")
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "mlp", "stable": 1, "previous": 3}
    assert spread(gateway, "mlp", 10) == Counter({"1": 10})


def test_retire_unloads_a_tfserving_version(gateway, compose_stack):
    r = gateway.post("/admin/models/mlp/versions/2/retire")
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "mlp", "version": 2, "retired": True, "unloaded": True}
    assert predict(gateway, "mlp", 2).status_code == 404  # routing stops first
    # Each replica's agent unloads it; TF Serving on its manager's next ticks: wait, boundedly.
    converges(compose_stack, tfserving_available, "mlp", {4})


def test_retire_unloads_a_torchserve_version(gateway, compose_stack):
    r = gateway.post("/admin/models/mlp/versions/3/retire")
    assert r.status_code == 200, r.text
    assert predict(gateway, "mlp", 3).status_code == 404  # routing stops first, whatever the backend said
    assert r.json() == {"model": "mlp", "version": 3, "retired": True, "unloaded": True}
    converges(compose_stack, torchserve_versions, "mlp", {"1"})


def registry_versions(gateway, model: str, backend: str) -> set[int]:
    return {
        v["version"]
        for v in status(gateway, model)["versions"]
        if v["backend"] == backend and v["state"] == "available"
    }


@pytest.mark.parametrize("backend", ["torchserve", "tfserving"])
def test_a_restarted_backend_loads_exactly_the_registrys_versions(gateway, compose_stack, backend):
    compose_stack.compose("restart", "--timeout", "20", backend, timeout=300)
    compose_stack.wait_healthy((backend,), RESTART_DEADLINE_S)
    loaded = torchserve_versions if backend == "torchserve" else tfserving_available
    # Every replica's agent loads again what the registry wants, by itself.
    for model in ("mlp", "cnn"):
        want = registry_versions(gateway, model, backend)
        converges(compose_stack, lambda s, m, i: {int(v) for v in loaded(s, m, i)}, model, want)
    compose_stack.wait_replicas_ready(CONVERGE_DEADLINE_S)  # and each reported it ready
    # And the gateway serves every available version of that backend, with no probe's help.
    for model in ("mlp", "cnn"):
        for version in registry_versions(gateway, model, backend):
            r = predict(gateway, model, version)
            assert r.status_code == 200, (model, version, r.text)
            assert r.headers["X-Backend"] == backend


def test_backend_ports_are_published_nowhere_and_the_gateway_only_on_loopback(compose_stack):
    for backend in BACKEND_PORTS:
        for container in compose_stack.containers(backend):
            settings = compose_stack.inspect(backend, container)["NetworkSettings"]
            assert not any(settings["Ports"].values()), (backend, settings["Ports"])
            assert set(settings["Networks"]) == {INTERNAL}, backend
    settings = compose_stack.inspect("gateway")["NetworkSettings"]
    assert set(settings["Networks"]) == {INTERNAL, EDGE}
    published = [b for bindings in settings["Ports"].values() if bindings for b in bindings]
    assert sorted(published, key=lambda b: b["HostPort"]) == sorted(
        [{"HostIp": "127.0.0.1", "HostPort": str(p)} for p in (compose_stack.port, compose_stack.grpc_port)],
        key=lambda b: b["HostPort"],
    )
    internal, edge = (compose_stack.docker_json("network", "inspect", name)[0] for name in (INTERNAL, EDGE))
    assert (internal["Internal"], edge["Internal"]) == (True, False)


def test_management_ports_are_unreachable_from_outside_the_internal_network(compose_stack):
    """A container on the gateway's other network can neither resolve the backends' names nor
    connect to their addresses; the same probe on the internal network reaches every replica's
    inference and metrics ports, and TorchServe's management port on none (loopback only)."""
    addresses = {
        backend: [
            compose_stack.inspect(backend, c)["NetworkSettings"]["Networks"][INTERNAL]["IPAddress"]
            for c in compose_stack.containers(backend)
        ]
        for backend in BACKEND_PORTS
    }
    targets = [
        (host, port)
        for backend, ports in BACKEND_PORTS.items()
        for port in ports
        for host in (backend, *addresses[backend])
    ]
    assert {port for _, port in targets} >= {8080, 8082, 8500, 8501}
    from_inside = probe_from(compose_stack, INTERNAL, targets)
    assert from_inside == ["open"] * len(targets), list(zip(targets, from_inside, strict=True))
    from_outside = probe_from(compose_stack, EDGE, targets)
    assert "open" not in from_outside, list(zip(targets, from_outside, strict=True))
    assert from_outside[0] == "gaierror"  # the name `torchserve` does not even resolve
    management = [(ip, port) for backend, ports in LOOPBACK_ONLY.items() for port in ports for ip in addresses[backend]]
    assert "open" not in probe_from(compose_stack, INTERNAL, management), management


PROBE = """
import json, socket, sys
out = []
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close()
        out.append("open")
    except OSError as exc:
        out.append(type(exc).__name__)
print(json.dumps(out))
"""


def probe_from(stack: ComposeStack, network: str, targets: list[tuple[str, int]]) -> list[str]:
    """Try each (host, port) from a throw-away container of the gateway image on ``network``."""
    argv = [stack.docker, "run", "--rm", "--network", network, "--entrypoint", "python", images.GATEWAY,
            "-c", PROBE, json.dumps(targets)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
