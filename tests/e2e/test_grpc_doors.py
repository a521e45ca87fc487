"""The gRPC front doors end to end: the official clients, unchanged (``tensorflow-serving-api``'s
stubs and the Triton gRPC client), against the gateway of the real local stack, on a version of
each stack; numbers equal to each version's own answer (its ``sample_output.json``)."""

from __future__ import annotations

import socket
import tempfile

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from gateway.app import create_app
from gateway.settings import Settings

tf = pytest.importorskip("tensorflow", reason="needs tensorflow-serving-api (the local extra)")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

BACKEND = {1: "torchserve", 2: "tfserving"}  # mlp's versions


@pytest.fixture(scope="module")
def channel(stack):
    with grpc.insecure_channel(stack.gateway_grpc_target) as chan:
        yield chan


@pytest.fixture(scope="module")
def oip(stack):
    client = triton.InferenceServerClient(stack.gateway_grpc_target)
    yield client
    client.close()


def predict_request(model: str, x: np.ndarray, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return request


@pytest.mark.parametrize("version", [1, 2])
def test_tfserving_client_predicts_on_either_stack(channel, samples, version):
    given, expected = samples("mlp", version)
    x = np.array(given["instances"], dtype=np.float32)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request("mlp", x, version=version), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]), expected["predictions"], atol=1e-5)
    assert (response.model_spec.name, response.model_spec.version.value) == ("mlp", version)
    assert response.model_spec.signature_name == "serving_default"


def test_tfserving_client_by_label_and_metadata_and_status(channel, samples):
    given, expected = samples("mlp", 1)
    x = np.array(given["instances"], dtype=np.float32)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request("mlp", x, label="stable"), timeout=30)
    assert response.model_spec.version.value == 1
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probabilities"]), expected["predictions"], atol=1e-5)

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mlp"
    request.model_spec.version.value = 2
    metadata = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signatures)
    inputs = signatures.signature_def["serving_default"].inputs
    assert [d.size for d in inputs["x"].tensor_shape.dim] == [-1, 4]
    assert metadata.model_spec.version.value == 2

    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "mlp"}), timeout=30
    )
    states = {s.version: s.state for s in status.model_version_status}
    assert states[1] == states[2] == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_tfserving_client_errors(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = np.ones((1, 4), np.float32)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request("nope", x), timeout=30)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.NOT_FOUND, "model 'nope' not found")
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request("mlp", np.ones((1, 5), np.float32), version=2), timeout=30)
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'x': expected shape [-1, 4], got [1, 5]",
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_triton_client_infers_on_either_stack(oip, samples, version):
    given, expected = samples("mlp", int(version))
    x = np.array(given["instances"], dtype=np.float32)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # raw_input_contents
    result = oip.infer("mlp", [tensor], model_version=version, outputs=[triton.InferRequestedOutput("probabilities")])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected["predictions"], atol=1e-5)
    assert result.get_response().model_version == version


def test_triton_client_health_metadata_and_errors(oip):
    assert oip.is_server_live() and oip.is_server_ready()
    assert oip.is_model_ready("mlp", "2")
    meta = oip.get_model_metadata("mlp", "2")
    assert (meta.platform, [(t.name, list(t.shape)) for t in meta.inputs]) == (
        "tensorflow_savedmodel",
        [("x", [-1, 4])],
    )
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as info:
        oip.infer("nope", [tensor])
    assert (info.value.status(), info.value.message()) == ("StatusCode.NOT_FOUND", "model 'nope' not found")


def test_a_deadline_shorter_than_the_answer(channel, oip):
    x = np.random.default_rng(5).normal(size=(64, 3, 32, 32)).astype(np.float32)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for version in (1, 2):
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_request("cnn", x, version=version), timeout=0.005)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, version
    # The gateway and both stacks answer normally afterwards.
    answer = stub.Predict(predict_request("cnn", x[:1], version=2), timeout=30)
    assert tf.make_ndarray(answer.outputs["logits"]).shape == (1, 10)


def test_inference_keys_as_metadata(stack, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        model_store=stack.store,
        torchserve_url=stack.torchserve_url,
        torchserve_management_url=stack.torchserve_management_url,
        tfserving_target=stack.tfserving_target,
        database_url=f"sqlite:///{tempfile.mkdtemp(dir=tmp_path)}/registry.db",
        inference_keys=[SecretStr("e2e-key-0123456789abcdef")],
        grpc_port=port,
    )
    x = np.ones((1, 4), np.float32)
    with TestClient(create_app(settings)), grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(chan)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(predict_request("mlp", x, version=2), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details().startswith("inference needs an API key")
        metadata = [("authorization", "Bearer e2e-key-0123456789abcdef")]
        assert stub.Predict(predict_request("mlp", x, version=2), timeout=30, metadata=metadata).outputs
