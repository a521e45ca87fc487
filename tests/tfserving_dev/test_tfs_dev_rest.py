"""The REST API (port 8501 style) and the Prometheus metrics page."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from .helpers import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/models/linear:predict", {"instances": [[1, 1], [2, 3]]}, {"predictions": [[31.0], [81.0]]}),
        ("/v1/models/linear/versions/1:predict", {"inputs": [[1, 1], [2, 3]]}, {"outputs": [[3.5], [8.5]]}),
        ("/v1/models/linear/labels/stable:predict", {"instances": [{"x": [1, 1]}]}, {"predictions": [[3.5]]}),
        (
            "/v1/models/linear:predict",
            {"signature_name": "serving_default", "inputs": {"x": [[1, 1]]}},
            {"outputs": [[31.0]]},
        ),
    ],
)  # fmt: skip
def test_predict_row_and_column_forms(server: ServerProcess, path: str, body: object, expected: object) -> None:
    assert server.http("POST", path, body) == (200, expected)


def test_predict_several_inputs_and_outputs(server: ServerProcess) -> None:
    rows = {"instances": [{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 4.0}]}
    assert server.http("POST", "/v1/models/pair:predict", rows) == (
        200,
        {"predictions": [{"product": 3.0, "sum": 4.0}, {"product": 8.0, "sum": 6.0}]},
    )
    columns = {"inputs": {"a": [1.5, 2.0], "b": [0.5, 4.0]}}
    assert server.http("POST", "/v1/models/pair:predict", columns) == (
        200,
        {"outputs": {"product": [0.75, 8.0], "sum": [2.0, 6.0]}},
    )


def test_predict_b64_strings(server: ServerProcess) -> None:
    body = {"instances": [{"b64": base64.b64encode(b"ab").decode()}, "xyz"]}
    status, answer = server.http("POST", "/v1/models/text:predict", body)
    assert status == 200
    # upper_bytes ends in _bytes, so TF Serving returns it base64-encoded.
    assert answer == {
        "predictions": [
            {"length": 2, "upper_bytes": {"b64": base64.b64encode(b"AB").decode()}},
            {"length": 3, "upper_bytes": {"b64": base64.b64encode(b"XYZ").decode()}},
        ]
    }


def test_status_routes(server: ServerProcess) -> None:
    ok = {"error_code": "OK", "error_message": ""}
    assert server.http("GET", "/v1/models/linear") == (
        200,
        {
            "model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": ok},
                {"version": "1", "state": "AVAILABLE", "status": ok},
            ]
        },
    )
    assert server.http("GET", "/v1/models/linear/versions/1") == (
        200,
        {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]},
    )
    # (A version that failed to load: see the conformance tests, which start a server for it.)
    assert server.http("GET", "/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})


def test_metadata_routes(server: ServerProcess) -> None:
    status, answer = server.http("GET", "/v1/models/linear/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": "linear", "signature_name": "", "version": "2"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "2"]
    status, answer = server.http("GET", "/v1/models/linear/labels/stable/metadata")
    assert (status, answer["model_spec"]["version"]) == (200, "1")
    status, answer = server.http("GET", "/v1/models/linear/versions/1/metadata")
    assert (status, answer["model_spec"]["version"]) == (200, "1")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404,
         "Servable not found for request: Latest(nope)"),
        ("POST", "/v1/models/linear/versions/7:predict", {"instances": [[1, 1]]}, 404,
         "Servable not found for request: Specific(linear, 7)"),
        ("POST", "/v1/models/linear/labels/nope:predict", {"instances": [[1, 1]]}, 400,
         "Unrecognized servable version label: nope"),
        ("POST", "/v1/models/linear:predict", b"{not json", 400, "JSON Parse error"),
        ("POST", "/v1/models/linear:predict", {"instances": [["a", 1]]}, 400,
         'JSON Value: "a" Type: String is not of expected type: float'),
        ("POST", "/v1/models/linear:predict", {"instances": [[1, 1, 1]]}, 400, "[?,2]"),
        ("POST", "/v1/models/linear:predict", {"rows": []}, 400,
         "Missing 'inputs' or 'instances' key"),
        ("POST", "/v1/models/pair:predict", {"instances": [1.0]}, 400,
         "instances is a plain list, but expecting list of objects"),
        ("POST", "/v1/models/pair:predict", {"inputs": {"a": [1.0]}}, 400,
         "Missing named input: b in 'inputs' object."),
        ("POST", "/v1/models/linear:predict", {"signature_name": "no", "instances": [[1, 1]]},
         400, 'Serving signature name: "no" not found in signature def'),
        ("POST", "/v1/models/linear:classify", {"examples": []}, 501, "not implemented"),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/linear/versions/9", None, 404,
         "Could not find version 9 of model linear"),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("GET", "/v1/unknown", None, 400, "Malformed request: GET /v1/unknown"),
        ("GET", "/elsewhere", None, 404, "Not found"),
    ],
)  # fmt: skip
def test_rest_errors(server: ServerProcess, method: str, path: str, body: object, status: int, message: str) -> None:
    got_status, answer = server.http(method, path, body)
    assert got_status == status
    assert set(answer) == {"error"}
    assert message in answer["error"]


def _metric(page: str, line_prefix: str) -> float:
    for line in page.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in metrics page:\n{page}")


def test_prometheus_metrics(server: ServerProcess) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "pair"
    for name in ("a", "b"):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.ones(2, np.float32)))
    for _ in range(3):
        server.predict.Predict(request, timeout=10)

    status, page = server.http("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    assert "# TYPE :tensorflow:serving:request_count counter" in page
    assert "# TYPE :tensorflow:serving:request_latency histogram" in page
    assert _metric(page, ':tensorflow:serving:request_count{model_name="pair",status="OK"}') >= 3
    latency = ':tensorflow:serving:request_latency_{}{{model_name="pair",API="Predict",entrypoint="GRPC"{}}}'
    assert _metric(page, latency.format("count", "")) >= 3
    assert _metric(page, latency.format("bucket", ',le="+Inf"')) >= 3
    assert _metric(page, latency.format("bucket", ',le="10"')) >= 0
    buckets = re.findall(r'request_latency_bucket\{model_name="pair",[^}]*le="([^"]+)"', page)
    assert len(buckets) == 34 and buckets[:3] == ["10", "18", "32.4"]
    # Failed requests are counted with their status, as TF Serving does.
    request.model_spec.name = "nope"
    with pytest.raises(Exception):  # noqa: B017 - any RpcError
        server.predict.Predict(request, timeout=10)
    _, page = server.http("GET", "/monitoring/prometheus/metrics")
    assert _metric(page, ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}') >= 1
