"""PredictionService and GetModelStatus over real gRPC, with the official client stubs."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from .helpers import AVAILABLE, ServerProcess

pytestmark = pytest.mark.e2e

X = np.array([[1.0, 1.0], [2.0, 3.0]], dtype=np.float32)
EXPECTED = {1: [[3.5], [8.5]], 2: [[31.0], [81.0]]}  # y = x @ W + b per version


def predict_request(
    model: str,
    inputs: dict[str, object],
    *,
    version: int | None = None,
    label: str | None = None,
    signature: str = "",
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        request.inputs[name].CopyFrom(proto)
    return request


def rpc_error(call, request) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


def test_status_reports_available_versions(server: ServerProcess) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "linear"
    response = server.models.GetModelStatus(request, timeout=10)
    assert [s.version for s in response.model_version_status] == [2, 1]  # newest first
    for status in response.model_version_status:
        assert status.state == AVAILABLE
        assert status.status.error_code == 0
        assert status.status.error_message == ""

    request.model_spec.version.value = 1
    response = server.models.GetModelStatus(request, timeout=10)
    assert [(s.version, s.state) for s in response.model_version_status] == [(1, AVAILABLE)]


def test_status_errors(server: ServerProcess) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    error = rpc_error(server.models.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model nope"

    request.model_spec.name = "linear"
    request.model_spec.version.value = 3  # the .mar directory: not in the policy
    error = rpc_error(server.models.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find version 3 of model linear"


@pytest.mark.parametrize(
    ("selector", "version"),
    [({}, 2), ({"version": 1}, 1), ({"version": 2}, 2), ({"label": "stable"}, 1)],
)
def test_predict_by_default_version_and_label(server: ServerProcess, selector: dict[str, object], version: int) -> None:
    request = predict_request("linear", {"x": X}, **selector)  # type: ignore[arg-type]
    response = server.predict.Predict(request, timeout=10)
    assert response.model_spec.name == "linear"
    assert response.model_spec.version.value == version
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs) == ["y"]
    # Like TF Serving, values come in the typed field, not tensor_content.
    assert response.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(response.outputs["y"].float_val) == [v for row in EXPECTED[version] for v in row]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), EXPECTED[version])


def test_predict_two_inputs_with_output_filter(server: ServerProcess) -> None:
    inputs = {"a": np.array([1, 2], np.float32), "b": np.array([3, 4], np.float32)}
    response = server.predict.Predict(predict_request("pair", inputs), timeout=10)
    assert sorted(response.outputs) == ["product", "sum"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["sum"]), [4, 6])

    request = predict_request("pair", inputs)
    request.output_filter.append("product")
    response = server.predict.Predict(request, timeout=10)
    assert list(response.outputs) == ["product"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["product"]), [3, 8])


def test_predict_strings(server: ServerProcess) -> None:
    request = predict_request("text", {"text": np.array([b"ab", b"xyz"], dtype=object)})
    response = server.predict.Predict(request, timeout=10)
    assert list(response.outputs["length"].int_val) == [2, 3]
    assert list(response.outputs["upper_bytes"].string_val) == [b"AB", b"XYZ"]


def test_unknown_model_version_and_label(server: ServerProcess) -> None:
    error = rpc_error(server.predict.Predict, predict_request("nope", {"x": X}))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"

    error = rpc_error(server.predict.Predict, predict_request("linear", {"x": X}, version=7))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(linear, 7)"

    error = rpc_error(server.predict.Predict, predict_request("linear", {"x": X}, label="nope"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: nope"


@pytest.mark.parametrize(
    ("model", "inputs", "fragments"),
    [
        ("linear", {"x": np.array([[1, 1]], np.int64)}, ["'x'", "DT_FLOAT", "DT_INT64"]),
        ("linear", {"x": np.ones((1, 3), np.float32)}, ["'x'", "[?,2]", "[1,3]"]),
        ("linear", {"z": X}, ["input tensor alias not found in signature: z", "{x}"]),
        ("linear", {"x": X, "z": X}, ["Sent extra: {z}"]),
        ("pair", {"a": np.ones(2, np.float32)}, ["Missing but required: {b}"]),
        ("linear", {}, ["Missing but required: {x}"]),
    ],
)
def test_malformed_inputs_are_invalid_argument(
    server: ServerProcess, model: str, inputs: dict[str, object], fragments: list[str]
) -> None:
    error = rpc_error(server.predict.Predict, predict_request(model, inputs))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    for fragment in fragments:
        assert fragment in error.details()


def test_unparseable_tensor_proto(server: ServerProcess) -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00\x01\x02")
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    error = rpc_error(server.predict.Predict, predict_request("linear", {"x": proto}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "tensor parsing error: x"
    # Still serving afterwards.
    server.predict.Predict(predict_request("linear", {"x": X}), timeout=10)


def test_unknown_signature_is_failed_precondition(server: ServerProcess) -> None:
    error = rpc_error(server.predict.Predict, predict_request("linear", {"x": X}, signature="no"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "no" not found.'


def test_get_model_metadata(server: ServerProcess) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "linear"
    response = server.predict.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == "linear"
    assert response.model_spec.version.value == 2
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    signature = signature_defs.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1, 2]
    assert list(signature.outputs) == ["y"]

    request.model_spec.version_label = "stable"
    assert server.predict.GetModelMetadata(request, timeout=10).model_spec.version.value == 1

    request.metadata_field[:] = ["nope"]
    error = rpc_error(server.predict.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_classify_is_unimplemented(server: ServerProcess) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "linear"
    error = rpc_error(server.predict.Classify, request)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
