"""TF Serving REST (v1) through the gateway, in process, against backend doubles."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

from gateway.core.errors import BackendError, BackendTimeout, BackendUnavailable

ROW = {"instances": [[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]]}


def test_row_form_default_goes_to_stable(client):
    r = client.post("/v1/models/toy:predict", json=ROW)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]]}
    assert r.headers["X-Model-Name"] == "toy"
    assert r.headers["X-Model-Version"] == "1"
    assert r.headers["X-Backend"] == "torchserve"
    assert r.headers["X-Model-Label"] == "stable"


def test_column_form_by_version_on_tfserving(client):
    r = client.post("/v1/models/toy/versions/2:predict", json={"inputs": [[1, 2, 3, 4]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"outputs": [[2.0, 4.0, 6.0, 8.0]]}
    assert (r.headers["X-Model-Version"], r.headers["X-Backend"]) == ("2", "tfserving")


def test_label_routes_to_its_version(client):
    r = client.post("/v1/models/toy/labels/canary:predict", json={"inputs": {"x": [[1, 1, 1, 1]]}})
    assert r.status_code == 200, r.text
    assert r.json() == {"outputs": [[3.0, 3.0, 3.0, 3.0]]}
    assert r.headers["X-Model-Version"] == "3"


def test_without_stable_label_the_highest_version_is_default(client):
    r = client.post("/v1/models/ints:predict", json={"instances": [5, 6]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [5, 6]}


def test_the_torchserve_version_gets_the_callers_body_unchanged(client, fake_backends):
    body = b'{"instances": [[1, 2, 3, 4]], "signature_name": "serving_default"}'
    r = client.post("/v1/models/toy/versions/1:predict", content=body)
    assert r.status_code == 200, r.text
    _, request = fake_backends["torchserve"].requests[-1]
    assert request.body == body and request.form == "row"


def test_multiple_inputs_in_row_form(client):
    r = client.post("/v1/models/pair:predict", json={"instances": [{"a": [1, 2], "b": [3, 4]}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[1.0, 2.0]]}


def test_b64_values(client):
    payload = {"instances": [{"b64": base64.b64encode(b"\xff\x00").decode()}, "plain"]}
    r = client.post("/v1/models/words:predict", json=payload)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [{"b64": "/wA="}, "plain"]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/nope:predict", ROW, 404, "model 'nope' not found"),
        ("/v1/models/toy/versions/9:predict", ROW, 404, "model 'toy' has no version 9 (versions: 1, 2, 3)"),
        ("/v1/models/toy/versions/abc:predict", ROW, 400, "version must be a positive integer, got 'abc'"),
        ("/v1/models/toy/versions/0:predict", ROW, 400, "version must be a positive integer, got '0'"),
        ("/v1/models/toy/labels/gold:predict", ROW, 404, "model 'toy' has no label 'gold' (labels: canary, stable)"),
        ("/v1/models/toy:predict", {"instances": [[1, 2, 3, 4, 5]]}, 400,
         "input 'x': expected shape [-1, 4], got [1, 5]"),
        ("/v1/models/toy:predict", {"instances": [["a", "b", "c", "d"]]}, 400,
         "input 'x': expected FP32 values, got strings"),
        ("/v1/models/toy:predict", {"instances": [[1, 2, 3, 4], [1, 2]]}, 400,
         "input 'x': values are not a rectangular tensor"),
        ("/v1/models/toy:predict", {"inputs": {"z": [[1, 2, 3, 4]]}}, 400,
         "unknown input 'z' (expected inputs: x)"),
        ("/v1/models/pair:predict", {"inputs": {"a": [[1, 2]]}}, 400, "missing input 'b' in 'inputs'"),
        ("/v1/models/pair:predict", {"instances": [{"a": [1, 2]}]}, 400,
         "'instances'[0]: missing input 'b'"),
        ("/v1/models/toy:predict", {"rows": []}, 400,
         "body must be a JSON object with exactly one of 'instances' (row form) or 'inputs'"),
        ("/v1/models/toy:predict", {"instances": []}, 400, "'instances' must be a non-empty list"),
        ("/v1/models/ints:predict", {"instances": [1.5]}, 400,
         "input 'n': expected INT64 values, got floating-point numbers"),
        ("/v1/models/ints:predict", {"instances": [2**63]}, 400, "input 'n': value out of range for INT64"),
        ("/v1/models/words:predict", {"instances": [{"b64": "%%%"}]}, 400, "'b64' value is not valid base64"),
        ("/v1/models/toy:predict", {"instances": [[True, 2.5, 3, 4]]}, 400,
         "input 'x': expected FP32 values, got booleans among the numbers"),
        ("/v1/models/ints:predict", {"inputs": [1, False]}, 400,
         "input 'n': expected INT64 values, got booleans among the numbers"),
        ("/predictions/ints", {"instances": [False, 3]}, 400,
         "input 'n': expected INT64 values, got booleans among the numbers"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_problem(client, path, body, status, message):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_malformed_json_is_400(client):
    r = client.post("/v1/models/toy:predict", content=b'{"instances": [[1, 2')
    assert r.status_code == 400
    assert r.json()["error"].startswith("request body is not valid JSON")


def test_body_over_limit_is_413(client):
    big = {"instances": [[1.0, 2.0, 3.0, 4.0]] * 400}
    r = client.post("/v1/models/toy:predict", json=big)
    assert r.status_code == 413
    assert "over the limit of 4096" in r.json()["error"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BackendError("tfserving toy v2: boom (INTERNAL)"), 502),
        (BackendUnavailable("tfserving toy v2: connection refused"), 503),
        (BackendTimeout("tfserving toy v2: no answer within the deadline"), 504),
    ],
)
def test_backend_errors_keep_their_status_and_message(client, fake_backends, error, status):
    fake_backends["tfserving"].fail = error
    r = client.post("/v1/models/toy/versions/2:predict", json=ROW)
    assert r.status_code == status
    assert r.json() == {"error": error.message}


def test_status_and_metadata(client):
    r = client.get("/v1/models/toy")
    assert r.status_code == 200
    assert [s["version"] for s in r.json()["model_version_status"]] == ["1", "2", "3"]
    assert {s["state"] for s in r.json()["model_version_status"]} == {"AVAILABLE"}
    r = client.get("/v1/models/toy/versions/2/metadata")
    sig = r.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "4"]
    assert r.json()["model_spec"]["version"] == "2"


def test_unknown_route_is_json_404(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json() == {"error": "no route GET /v1/nothing"}


@pytest.mark.parametrize(
    ("version", "want"),
    [
        (1, [math.nan, -math.inf, 1.0, float(np.float32(3e38))]),  # TorchServe double: x * 1
        (2, [math.nan, -math.inf, 2.0, math.inf]),  # TF Serving double: x * 2, 6e38 overflows float32
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_nan_and_infinity_travel_as_tf_serving_writes_them(client, version, want):
    # TF Serving's REST API reads and writes NaN, Infinity and -Infinity tokens (its JSON conformance).
    r = client.post(f"/v1/models/toy/versions/{version}:predict", content=b'{"instances": [[NaN, -Infinity, 1, 3e38]]}')
    assert r.status_code == 200, r.text
    assert b"NaN" in r.content and b"-Infinity" in r.content and b"null" not in r.content
    np.testing.assert_array_equal(json.loads(r.content)["predictions"][0], want)
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [NaN, -Infinity, 1, 3e38]}]}'
    r = client.post(f"/v2/models/toy/versions/{version}/infer", content=body)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(json.loads(r.content)["outputs"][0]["data"], want)
