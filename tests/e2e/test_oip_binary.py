"""The Triton HTTP client, unchanged, against the gateway in front of the real stack: binary tensor
data on and off, on a TorchServe version and a TF Serving version of each example model, the
numbers equal to the backend's own answer (asked directly, as JSON)."""

from __future__ import annotations

import urllib.parse

import httpx
import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.e2e.test_backends_direct import direct_url  # noqa: E402

VERSIONS = [("mlp", 1, "torchserve"), ("mlp", 2, "tfserving"), ("cnn", 1, "torchserve"), ("cnn", 2, "tfserving")]
SHAPES = {"mlp": (5, 4), "cnn": (2, 3, 32, 32)}
OUTPUT = {"mlp": "probabilities", "cnn": "logits"}
ATOL = {"mlp": 1e-5, "cnn": 1e-4}


@pytest.fixture(scope="module")
def triton(stack):
    client = httpclient.InferenceServerClient(urllib.parse.urlsplit(stack.gateway_url).netloc, network_timeout=60)
    yield client
    client.close()


def direct(stack, model: str, version: int, backend: str, x: np.ndarray) -> np.ndarray:
    r = httpx.post(direct_url(stack, model, version, backend), json={"instances": x.tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    return np.array(r.json()["predictions"], dtype=np.float32)


def infer_input(x: np.ndarray, *, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_server_metadata_lists_the_binary_extension(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]


@pytest.mark.parametrize(("model", "version", "backend"), VERSIONS)
def test_binary_and_json_inputs_and_outputs_give_the_backends_numbers(stack, triton, model, version, backend):
    x = np.random.default_rng(version).normal(size=SHAPES[model]).astype(np.float32)
    want = direct(stack, model, version, backend, x)
    name = OUTPUT[model]
    cases = [  # (input as binary, requested outputs): None asks for all outputs, as binary data
        (True, None),
        (True, [httpclient.InferRequestedOutput(name, binary_data=True)]),
        (True, [httpclient.InferRequestedOutput(name, binary_data=False)]),
        (False, [httpclient.InferRequestedOutput(name, binary_data=True)]),
        (False, [httpclient.InferRequestedOutput(name, binary_data=False)]),
    ]
    for binary_input, outputs in cases:
        result = triton.infer(
            model, [infer_input(x, binary=binary_input)], model_version=str(version), outputs=outputs, request_id="r1"
        )
        got = result.as_numpy(name)
        assert got is not None and got.dtype == np.float32 and got.shape == want.shape, (binary_input, outputs)
        np.testing.assert_allclose(got, want, atol=ATOL[model])
        response = result.get_response()
        assert (response["model_name"], response["model_version"], response["id"]) == (model, str(version), "r1")
        (tensor,) = response["outputs"]
        asked_binary = outputs is None or outputs[0]._binary
        assert ("binary_data_size" in tensor.get("parameters", {})) == asked_binary, (binary_input, outputs)


def test_binary_cnn_answers_the_same_as_json_cnn_through_the_gateway(triton):
    x = np.random.default_rng(5).normal(size=(4, 3, 32, 32)).astype(np.float32)
    answers = [
        triton.infer("cnn", [infer_input(x, binary=binary)], model_version=version).as_numpy("logits")
        for version in ("1", "2")
        for binary in (True, False)
    ]
    for answer in answers[1:]:
        np.testing.assert_allclose(answer, answers[0], atol=1e-4)


@pytest.mark.parametrize(
    ("model", "build", "message"),
    [
        ("nope", lambda: infer_input(np.zeros((1, 4), np.float32), binary=True), "[404] model 'nope' not found"),
        ("mlp", lambda: infer_input(np.zeros((1, 5), np.float32), binary=True), "[400] input 'x': expected shape [-1, 4], got [1, 5]"),
        ("mlp", lambda: _fp16(np.zeros((1, 4), np.float16)), "[400] input 'x': expected datatype FP32, got FP16"),
    ],
)  # fmt: skip
def test_errors_reach_the_client_as_its_exceptions(triton, model, build, message):
    with pytest.raises(InferenceServerException) as info:
        triton.infer(model, [build()], model_version="2")
    assert message in str(info.value)


def _fp16(x: np.ndarray) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", list(x.shape), "FP16")
    tensor.set_data_from_numpy(x, binary_data=True)
    return tensor
