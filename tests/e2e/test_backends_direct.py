"""Each example version answers on its own server with the expected numbers (no gateway)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

VERSIONS = [("mlp", 1, "torchserve"), ("mlp", 2, "tfserving"), ("mlp", 3, "torchserve"),
            ("cnn", 1, "torchserve"), ("cnn", 2, "tfserving")]  # fmt: skip


def direct_url(stack, model: str, version: int, backend: str) -> str:
    if backend == "torchserve":
        return f"{stack.torchserve_url}/predictions/{model}/{version}"
    return f"{stack.tfserving_rest_url}/v1/models/{model}/versions/{version}:predict"


@pytest.mark.parametrize(("model", "version", "backend"), VERSIONS)
def test_sample_input_gives_the_expected_output(stack, samples, model, version, backend):
    sample_in, sample_out = samples(model, version)
    r = httpx.post(direct_url(stack, model, version, backend), json=sample_in, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], sample_out["predictions"], atol=1e-5)


@pytest.mark.parametrize(("model", "shape", "atol"), [("mlp", (8, 4), 1e-5), ("cnn", (3, 3, 32, 32), 1e-4)])
def test_pytorch_and_tensorflow_exports_agree_on_random_inputs(stack, model, shape, atol):
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32).tolist()
    ts = httpx.post(direct_url(stack, model, 1, "torchserve"), json={"instances": x}, timeout=30)
    tf = httpx.post(direct_url(stack, model, 2, "tfserving"), json={"instances": x}, timeout=30)
    assert ts.status_code == tf.status_code == 200, (ts.text, tf.text)
    np.testing.assert_allclose(ts.json()["predictions"], tf.json()["predictions"], atol=atol)


def test_mlp_version_3_has_other_weights(stack, samples):
    sample_in, _ = samples("mlp", 1)
    v1 = httpx.post(direct_url(stack, "mlp", 1, "torchserve"), json=sample_in, timeout=30).json()
    v3 = httpx.post(direct_url(stack, "mlp", 3, "torchserve"), json=sample_in, timeout=30).json()
    assert np.abs(np.array(v1["predictions"]) - np.array(v3["predictions"])).max() > 1e-2


def test_both_stacks_take_the_column_form(stack):
    x = [[0.1, 0.2, 0.3, 0.4]]
    ts = httpx.post(direct_url(stack, "mlp", 1, "torchserve"), json={"inputs": x}, timeout=30)
    tf = httpx.post(direct_url(stack, "mlp", 2, "tfserving"), json={"inputs": x}, timeout=30)
    assert ts.status_code == tf.status_code == 200
    np.testing.assert_allclose(ts.json()["outputs"], tf.json()["outputs"], atol=1e-5)


def test_torchserve_handler_rejects_a_wrong_shape(stack):
    r = httpx.post(direct_url(stack, "mlp", 1, "torchserve"), json={"instances": [[1, 2, 3]]}, timeout=30)
    assert r.status_code == 400
    assert "input 'x'" in r.json()["error"] and "[-1, 4]" in r.json()["error"]


def test_tfserving_status_through_the_official_client(stack):
    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(stack.tfserving_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for model in ("mlp", "cnn"):
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = model
            resp = stub.GetModelStatus(req, timeout=10)
            states = {s.version: s.state for s in resp.model_version_status}
            assert states == {2: get_model_status_pb2.ModelVersionStatus.AVAILABLE}
