"""The data plane end to end: the gateway in front of real TorchServe and the TF Serving-compatible
server, every protocol, every way of addressing a version, every error status."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import urllib.parse
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings

X = np.random.default_rng(11).normal(size=(5, 4)).astype(np.float32)


def v1(gateway, path, body):
    r = gateway.post(path, json=body)
    assert r.status_code == 200, r.text
    return r


def test_mlp_on_both_stacks_gives_the_same_numbers_through_every_protocol(gateway):
    rows = X.tolist()
    answers = {}
    for version in (1, 2):
        row = v1(gateway, f"/v1/models/mlp/versions/{version}:predict", {"instances": rows})
        col = v1(gateway, f"/v1/models/mlp/versions/{version}:predict", {"inputs": {"x": rows}})
        oip = v1(gateway, f"/v2/models/mlp/versions/{version}/infer", {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [5, 4], "data": X.ravel().tolist()}]
        })  # fmt: skip
        ts = v1(gateway, f"/predictions/mlp/{version}", {"instances": rows})
        out = oip.json()["outputs"][0]
        assert (out["name"], out["datatype"], out["shape"]) == ("probabilities", "FP32", [5, 3])
        got = [
            np.array(row.json()["predictions"]),
            np.array(col.json()["outputs"]),
            np.array(out["data"]).reshape(5, 3),
            np.array(ts.json()["predictions"]),
        ]
        for g in got[1:]:
            np.testing.assert_allclose(g, got[0], atol=1e-6)
        np.testing.assert_allclose(got[0].sum(axis=1), 1.0, atol=1e-5)  # softmax
        assert row.headers["X-Backend"] == ("torchserve" if version == 1 else "tfserving")
        assert row.headers["X-Model-Version"] == str(version)
        answers[version] = got[0]
    np.testing.assert_allclose(answers[1], answers[2], atol=1e-5)


def test_cnn_on_both_stacks_through_the_gateway(gateway):
    x = np.random.default_rng(3).normal(size=(2, 3, 32, 32)).astype(np.float32).tolist()
    a = v1(gateway, "/v1/models/cnn/versions/1:predict", {"instances": x}).json()["predictions"]
    b = v1(gateway, "/v1/models/cnn/versions/2:predict", {"instances": x}).json()["predictions"]
    assert np.array(a).shape == (2, 10)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_version_label_and_default_addressing(gateway):
    rows = {"instances": X.tolist()}
    v3 = v1(gateway, "/v1/models/mlp/versions/3:predict", rows)
    stable = v1(gateway, "/v1/models/mlp/labels/stable:predict", rows)
    default = v1(gateway, "/v1/models/mlp:predict", rows)
    direct_v1 = v1(gateway, "/v1/models/mlp/versions/1:predict", rows)
    assert v3.headers["X-Model-Version"] == "3" and v3.headers["X-Backend"] == "torchserve"
    # The example state file makes version 1 stable, so both the label and the default reach it.
    for r in (stable, default):
        assert r.headers["X-Model-Version"] == "1"
        assert r.json() == direct_v1.json()
    assert np.abs(np.array(v3.json()["predictions"]) - np.array(direct_v1.json()["predictions"])).max() > 1e-2


def test_status_and_metadata_of_both_stacks(gateway):
    status = gateway.get("/v1/models/mlp").json()["model_version_status"]
    assert {s["version"]: s["state"] for s in status} == {
        "1": "AVAILABLE",
        "2": "AVAILABLE",
        "3": "AVAILABLE",
    }
    meta = gateway.get("/v2/models/mlp/versions/2").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert gateway.get("/v2/models/cnn/versions/2/ready").json()["ready"] is True
    assert gateway.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/mlp:predict", b'{"instances": [[1, 2', 400, "request body is not valid JSON"),
        ("/v1/models/mlp/versions/2:predict", b'{"instances": [[1, 2, 3]]}', 400,
         "input 'x': expected shape [-1, 4], got [1, 3]"),
        ("/v1/models/mlp/versions/1:predict", b'{"instances": [["a", "b", "c", "d"]]}', 400,
         "input 'x': expected FP32 values, got strings"),
        ("/v1/models/mlp/versions/2:predict", b'{"inputs": {"y": [[1, 2, 3, 4]]}}', 400,
         "unknown input 'y' (expected inputs: x)"),
        ("/v2/models/mlp/versions/1/infer", b'{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}',
         400, "input 'x': expected datatype FP32, got INT32"),
        ("/v1/models/ghost:predict", b'{"instances": [[1, 2, 3, 4]]}', 404, "model 'ghost' not found"),
        ("/v1/models/mlp/versions/42:predict", b'{"instances": [[1, 2, 3, 4]]}', 404,
         "model 'mlp' has no version 42"),
        ("/v1/models/mlp/labels/gold:predict", b'{"instances": [[1, 2, 3, 4]]}', 404,
         "model 'mlp' has no label 'gold'"),
    ],
)  # fmt: skip
def test_client_errors_through_the_real_stack(gateway, path, body, status, message):
    r = gateway.post(path, content=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_body_over_the_limit_is_413(gateway):
    big = b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0]," * 900_000 + b"[1.0, 2.0, 3.0, 4.0]]}"
    r = gateway.post("/v1/models/mlp:predict", content=big)
    assert r.status_code == 413
    assert "over the limit" in r.json()["error"]


def raw_request(base: str, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    """Send ``path`` exactly as written: httpx (like browsers) resolves ``..`` segments before
    sending, so ``/predictions/mlp/1/../../../models`` would leave it as ``/models``."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/models"),  # TorchServe management: list
        ("POST", "/models?url=https://example.com/evil.mar&model_name=evil"),  # register
        ("PUT", "/models/mlp?min_worker=0"),  # scale
        ("DELETE", "/models/mlp/1"),  # unregister
        ("GET", "/models/mlp/all"),  # describe
        ("POST", "/v1/models/mlp/versions/1:reload"),
        ("POST", "/predictions/mlp/..%2F..%2Fmodels"),
        ("POST", "/predictions/mlp/1/../../../models"),  # sent as written: see raw_request
        ("POST", "/predictions/mlp/1/%2e%2e/%2e%2e/%2e%2e/models"),
        ("PUT", "/predictions/../models/mlp?min_worker=0"),
        ("GET", "/monitoring/prometheus/metrics"),  # TF Serving's metrics
        ("GET", "/api/v1/status"),
    ],
)
def test_backend_management_and_metrics_are_never_reachable_through_the_gateway(stack, method, path):
    status, body = raw_request(stack.gateway_url, method, path, b"{}")
    assert status in (400, 404, 405), (status, body)
    assert set(json.loads(body)) == {"error"}
    # The backend still has what a reachable management API would have let a caller change.
    assert httpx.get(f"{stack.torchserve_management_url}/models/mlp/1").status_code == 200


def test_metrics_are_the_gateways_own(gateway):
    text = gateway.get("/metrics").text
    assert "gateway_requests_total" in text
    assert "ts_inference_latency_microseconds" not in text and ":tensorflow:serving:" not in text


@pytest.fixture
def store_with_ghost_versions(stack, tmp_path: Path) -> Path:
    """The example store plus mlp versions the backends never loaded (8 on TF, 9 on TorchServe)."""
    real = stack.store
    store = tmp_path / "store"
    (store / "mlp").mkdir(parents=True)
    for version in (1, 2, 3):
        os.symlink(real / "mlp" / str(version), store / "mlp" / str(version))
    os.symlink(real / "mlp" / "2", store / "mlp" / "8")
    # Version 9: version 3's archive saying version 9 (the gateway adopts only archives whose
    # manifest names their directory's version exactly, as TorchServe keys versions by that string).
    ghost = shutil.copytree(real / "mlp" / "3", store / "mlp" / "9")
    for archive in ghost.glob("*.mar"):
        with zipfile.ZipFile(archive) as old:
            members = {info.filename: old.read(info) for info in old.infolist()}
        manifest = json.loads(members["MAR-INF/MANIFEST.json"])
        manifest["model"]["modelVersion"] = "9"
        members["MAR-INF/MANIFEST.json"] = json.dumps(manifest).encode()
        with zipfile.ZipFile(archive, "w") as new:
            for name, data in members.items():
                new.writestr(name, data)
    return store


def in_process_gateway(stack, store: Path, **overrides) -> TestClient:
    fields = {
        "model_store": store,
        "torchserve_url": stack.torchserve_url,
        "torchserve_management_url": stack.torchserve_management_url,
        "tfserving_target": stack.tfserving_target,
        "database_url": f"sqlite:///{tempfile.mkdtemp()}/registry.db",
    }
    settings = Settings(**(fields | overrides))
    return TestClient(create_app(settings))


def test_backend_errors_are_502_with_the_backends_message(stack, store_with_ghost_versions):
    with in_process_gateway(stack, store_with_ghost_versions) as client:
        body = {"instances": [[1, 2, 3, 4]]}
        r = client.post("/v1/models/mlp/versions/9:predict", json=body)
        assert r.status_code == 502, r.text
        assert r.json()["error"].startswith("torchserve mlp v9: ")
        assert "Model version: 9 does not exist for model: mlp" in r.json()["error"]
        r = client.post("/v1/models/mlp/versions/8:predict", json=body)
        assert r.status_code == 502, r.text
        assert r.json()["error"].startswith("tfserving mlp v8: ")
        assert "NOT_FOUND" in r.json()["error"]


def test_unreachable_backends_are_503(stack, store_with_ghost_versions):
    from localstack import free_port

    dead = free_port()
    with in_process_gateway(
        stack,
        store_with_ghost_versions,
        torchserve_url=f"http://127.0.0.1:{dead}",
        tfserving_target=f"127.0.0.1:{dead}",
        tfserving_timeout_seconds=3,
    ) as client:
        for version, name in ((1, "torchserve"), (2, "tfserving")):
            r = client.post(f"/v1/models/mlp/versions/{version}:predict", json={"instances": [[1, 2, 3, 4]]})
            assert r.status_code == 503, r.text
            assert r.json()["error"].startswith(f"{name} mlp")
            assert r.headers["Retry-After"] == "1"
            # Which backend failed and how, never where it runs (the log has the address).
            assert "127.0.0.1" not in r.text and str(dead) not in r.text and "ipv4" not in r.text


def test_deadline_passed_is_504(stack, store_with_ghost_versions):
    x = np.zeros((64, 3, 32, 32), np.float32).tolist()
    real = stack.store
    with in_process_gateway(stack, real, torchserve_timeout_seconds=0.001, tfserving_timeout_seconds=0.001) as client:
        for version in (1, 2):
            r = client.post(f"/v1/models/cnn/versions/{version}:predict", json={"instances": x})
            assert r.status_code == 504, r.text
            assert r.json()["error"].endswith("no answer within the deadline")
