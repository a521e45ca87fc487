"""An official TF Serving client (``tensorflow-serving-api``'s stubs and messages, unchanged) calls
the gateway's gRPC door: its messages are wire-compatible with the gateway's lean ones."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs tensorflow-serving-api (the local extra)")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@pytest.mark.parametrize("version", [1, 2])  # a TorchServe version, a TF Serving version
def test_official_predict(channel, version):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.version.value = version
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    response = stub.Predict(request, timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), X * version)
    assert (response.model_spec.name, response.model_spec.version.value) == ("toy", version)
    assert response.model_spec.signature_name == "serving_default"


def test_official_predict_by_label_with_typed_values(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "toy"
    request.model_spec.version_label = "canary"
    request.model_spec.signature_name = "serving_default"
    tensor = request.inputs["x"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add(size=1)
    tensor.tensor_shape.dim.add(size=4)
    tensor.float_val.extend([1.0, 2.0, 3.0, 4.0])
    response = stub.Predict(request, timeout=10)
    assert response.model_spec.version.value == 3
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), X * 3)


def test_official_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "toy"
    response = stub.GetModelMetadata(request, timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    inputs = signatures.signature_def["serving_default"].inputs
    assert (inputs["x"].dtype, [d.size for d in inputs["x"].tensor_shape.dim]) == (tf.float32.as_datatype_enum, [-1, 4])
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "toy", "version": {"value": 2}}), timeout=10
    )
    [item] = status.model_version_status
    assert (item.version, item.state) == (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
