"""The inference protocols over HTTP, in process, on the fake-backend app, with bodies made for
the addressed model's signature (which the OpenAPI schema cannot know).

Any body gives an answer below 500, and an error answer is ``{"error": "..."}``; a valid body,
in any form of any protocol, comes back with exactly what the fake backend computes (its inputs
times the version; BYTES echoed).
"""

from __future__ import annotations

import json
from typing import Any

import hypothesis
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.core.restjson import decode_outputs
from gateway.core.tensors import Signature, TensorSpec, to_array, to_json_value
from tests.fuzz.strategies import FUZZ, arrays_of, assert_same, examples, infer_payloads, predict_payloads

HTTP = settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# (model, version, stack) of the fake store in tests/conftest.py; toy's default is its stable label.
TARGETS = [("toy", 1, "torchserve"), ("toy", 2, "tfserving"), ("toy", 3, "torchserve"),
           ("ints", 1, "tfserving"), ("words", 1, "tfserving"), ("pair", 1, "tfserving")]  # fmt: skip
PROTOCOLS = ["v1", "v1-default", "v2", "torchserve"]


@pytest.fixture
def signatures(fake_store) -> dict[tuple[str, int], Signature]:
    found = {}
    for model, version, _ in TARGETS:
        signature = Signature.load(fake_store / model / str(version) / "signature.json")
        assert signature is not None
        found[(model, version)] = signature
    return found


def path(protocol: str, model: str, version: int) -> str:
    return {
        "v1": f"/v1/models/{model}/versions/{version}:predict",
        "v1-default": f"/v1/models/{model}:predict",
        "v2": f"/v2/models/{model}/versions/{version}/infer",
        "torchserve": f"/predictions/{model}/{version}",
    }[protocol]


def dumps(payload: Any) -> bytes:
    """A client's JSON: any integer; NaN and infinities as Python writes them (which is not JSON)."""
    try:
        return json.dumps(payload).encode()
    except RecursionError:  # deeper than the encoder goes
        hypothesis.reject()


def assert_error_object(response: Any) -> None:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str) and body["error"]


@HTTP
@given(data=st.data(), target=st.sampled_from(TARGETS), protocol=st.sampled_from(PROTOCOLS))
def test_no_body_gives_a_server_error(client, signatures, data, target, protocol):
    model, version, _ = target
    signature = signatures[(model, version)]
    payload = data.draw(infer_payloads(signature) if protocol == "v2" else predict_payloads(signature))
    body = data.draw(st.just(dumps(payload)) | st.binary(max_size=40))
    response = client.post(path(protocol, model, version), content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error_object(response)


def valid_arrays(signature: Signature, batch: int) -> st.SearchStrategy[dict[str, np.ndarray]]:
    """Inputs for ``signature`` with ``batch`` rows; float32 kept where the fake's ``x * 3`` stays finite."""

    def of(spec: TensorSpec) -> st.SearchStrategy[np.ndarray]:
        shape = (batch, *spec.shape[1:])
        if spec.datatype == "FP32":
            # Bounded, so that the fake's x * 3 stays finite and comparable.
            finite = hnp.from_dtype(np.dtype(np.float32), min_value=-(2.0**100), max_value=2.0**100)
            return hnp.arrays(np.float32, shape, elements=finite)
        return arrays_of(spec.datatype, shape)

    return st.fixed_dictionaries({spec.name: of(spec) for spec in signature.inputs})


def fake_answer(signature: Signature, inputs: dict[str, np.ndarray], version: int) -> dict[str, np.ndarray]:
    """What tests.fakes.FakeBackend answers: the first input times the version (BYTES as they are)."""
    x = inputs[signature.inputs[0].name]
    y = x if x.dtype.kind == "O" else (x * version).astype(x.dtype)
    return {signature.outputs[0].name: y}


def v1_bodies(signature: Signature, inputs: dict[str, np.ndarray]) -> list[tuple[bytes, str]]:
    batch = next(iter(inputs.values())).shape[0]
    named_rows = [{n: to_json_value(a[i, ...]) for n, a in inputs.items()} for i in range(batch)]
    named_columns = {n: to_json_value(a) for n, a in inputs.items()}
    bodies = [({"instances": named_rows}, "row"), ({"inputs": named_columns}, "column")]
    if len(inputs) == 1:
        (x,) = inputs.values()
        bodies += [
            ({"instances": [to_json_value(x[i, ...]) for i in range(batch)]}, "row"),
            ({"inputs": to_json_value(x)}, "column"),
        ]
    return [(orjson.dumps(b), form) for b, form in bodies]


@settings(HTTP, max_examples=examples(75))  # each example makes up to thirteen requests
@given(data=st.data(), target=st.sampled_from(TARGETS), batch=st.integers(1, 3))
def test_valid_bodies_come_back_exactly_in_every_protocol(client, signatures, data, target, batch):
    model, version, stack = target
    signature = signatures[(model, version)]
    inputs = data.draw(valid_arrays(signature, batch))
    want = fake_answer(signature, inputs, version)
    (out_name,) = want

    routes = ["v1", "torchserve"] + (["v1-default"] if version == 1 else [])  # version 1 is every default
    for protocol in routes:
        for body, form in v1_bodies(signature, inputs):
            response = client.post(path(protocol, model, version), content=body)
            assert response.status_code == 200, response.text
            if protocol == "torchserve" and stack == "torchserve":  # passed through unchanged
                assert response.content == b"echo:" + body
            else:
                assert_same(decode_outputs(response.content, form, signature)[out_name], want[out_name])

    tensors = [
        {
            "name": s.name,
            "datatype": s.datatype,
            "shape": list(inputs[s.name].shape),
            "data": to_json_value(inputs[s.name].reshape(-1)),
        }
        for s in signature.inputs
    ]
    body = {"id": "fuzz", "inputs": tensors, "outputs": [{"name": out_name}]}
    response = client.post(path("v2", model, version), content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "fuzz" and answer["model_version"] == str(version)
    (output,) = answer["outputs"]
    assert output["name"] == out_name and output["datatype"] == signature.outputs[0].datatype
    got = to_array(out_name, output["data"], output["datatype"]).reshape(output["shape"])
    assert_same(got, want[out_name])


def _nested(depth: int) -> str:
    return "[" * depth + '"a"' + "]" * depth


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        # The fuzzer's finds over HTTP, each a 500 before (see test_decoders for the details).
        ("/v2/models/toy/versions/1/infer", '{"inputs": [{"name": "x", "datatype": [], "shape": [1, 4], "data": [1, 2, 3, 4]}]}',
         "input 'x': datatype must be one of BOOL,"),
        ("/v2/models/toy/versions/2/infer", '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 9223372036854775808], "data": []}]}',
         "input 'x': shape [0, 9223372036854775808] is not a valid tensor shape"),
        ("/v1/models/words:predict", '{"instances": ' + _nested(40) + "}", "input 'text': expected shape [-1], got [1, 1,"),
        ("/v1/models/words:predict", '{"instances": ' + _nested(990) + "}",
         "request body refused: JSON nested 991 levels deep, over the limit of 64 (GATEWAY_MAX_JSON_DEPTH)"),
        ("/v1/models/words:predict", '{"instances": ' + _nested(62) + "}", "input 'text': expected shape [-1], got [1, 1,"),
        # Was a 200 with null: a finite value beyond float32 became infinity.
        ("/v1/models/toy:predict", '{"instances": [[1e39, 0, 0, 0]]}', "input 'x': value out of range for FP32"),
    ],
)  # fmt: skip
def test_http_regressions(client, route, body, message):
    response = client.post(route, content=body.encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message), response.text


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")  # the fake's x * 3
def test_a_non_finite_model_output_travels_as_tf_serving_writes_it(client):
    """float32 2e38 times 3 is infinity: through the TorchServe leg's JSON and back, as ``Infinity``."""
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [2e38, 0, 0, 0]}]}
    response = client.post("/v2/models/toy/versions/3/infer", json=body)
    assert response.status_code == 200, response.text
    assert b'"data":[Infinity,0.0,0.0,0.0]' in response.content
