"""TF Serving's gRPC API served by the gateway (lean messages over a real in-process gRPC server)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from pydantic import SecretStr

from gateway import metrics
from gateway.backends.tfserving.codec import from_tensor_proto, to_tensor_proto
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.backends.tfserving.protos import tensorflow_pb2 as tf_pb2
from gateway.core.errors import BackendTimeout, BackendUnavailable
from tests.protocols.rpc.conftest import unary
from tests.waiting import wait_until

PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def predict_request(model="toy", *, version=None, label=None, signature="", x=X, name="x") -> pb.PredictRequest:
    request = pb.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    to_tensor_proto(x, request.inputs[name])
    return request


def predict(channel, request, **kwargs) -> pb.PredictResponse:
    return unary(channel, PREDICT, request, pb.PredictResponse, **kwargs)


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.mark.parametrize(("version", "backend"), [(1, "torchserve"), (2, "tfserving"), (3, "torchserve")])
def test_predict_by_version_on_either_stack(channel, version, backend):
    response = predict(channel, predict_request(version=version))
    np.testing.assert_array_equal(from_tensor_proto(response.outputs["y"]), X * version)
    assert response.outputs["y"].dtype == tf_pb2.DT_FLOAT
    # As TF Serving fills it (predict_util.cc RunPredict -> MakeModelSpec): name, version, signature.
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == version
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.WhichOneof("version_choice") == "version"


def test_predict_by_label_and_by_default(channel):
    by_label = predict(channel, predict_request(label="canary"))
    assert by_label.model_spec.version.value == 3
    np.testing.assert_array_equal(from_tensor_proto(by_label.outputs["y"]), X * 3)
    by_default = predict(channel, predict_request())
    assert by_default.model_spec.version.value == 1  # stable


def test_typed_values_are_read_as_tensor_content(channel):
    request = predict_request(version=2)
    tensor = request.inputs["x"]
    tensor.ClearField("tensor_content")
    tensor.float_val.extend([1.0, 2.0, 3.0, 4.0])
    response = predict(channel, request)
    np.testing.assert_array_equal(from_tensor_proto(response.outputs["y"]), X * 2)


def test_int64_and_bytes_tensors(channel):
    ints = predict_request("ints", x=np.array([1, -(2**40)], dtype=np.int64), name="n")
    answer = predict(channel, ints)
    np.testing.assert_array_equal(from_tensor_proto(answer.outputs["m"]), [1, -(2**40)])
    words = predict_request("words", x=np.array([b"a", b"\xff\x00"], dtype=object), name="text")
    answer = predict(channel, words)
    assert list(answer.outputs["echo"].string_val) == [b"a", b"\xff\x00"]


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (predict_request("nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
        (predict_request(version=9), grpc.StatusCode.NOT_FOUND, "model 'toy' has no version 9 (versions: 1, 2, 3)"),
        (predict_request(label="gold"), grpc.StatusCode.NOT_FOUND, "model 'toy' has no label 'gold'"),
        (
            predict_request(x=np.ones((1, 5), np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x': expected shape [-1, 4], got [1, 5]",
        ),
        (
            predict_request(x=np.ones((1, 4), np.float64)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x': expected dtype DT_FLOAT, got DT_DOUBLE",
        ),
        (predict_request(name="z"), grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'z' (expected inputs: x)"),
        (
            predict_request(signature="other"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "other" not found.',
        ),
    ],
)
def test_errors_are_status_codes_with_the_rest_message(channel, request_, code, message):
    error = error_of(lambda: predict(channel, request_))
    assert error.code() == code
    assert error.details().startswith(message)


def test_malformed_tensor_content_is_invalid_argument(channel):
    request = predict_request(version=2)
    request.inputs["x"].tensor_content = b"\x00" * 15
    error = error_of(lambda: predict(channel, request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "input 'x' tensor_content has 15 bytes; shape [1, 4] of float32 needs 16"


def test_a_repeated_value_cannot_ask_for_unbounded_memory(channel):
    request = predict_request(version=2)
    tensor = request.inputs["x"]
    tensor.ClearField("tensor_content")
    tensor.tensor_shape.dim[0].size = 1 << 40
    tensor.float_val.append(1.0)
    error = error_of(lambda: predict(channel, request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has more than 4096 elements" in error.details()


def test_a_message_over_the_body_limit_is_resource_exhausted(channel):
    big = np.ones((2000, 4), np.float32)  # 32000 bytes > GATEWAY_MAX_BODY_BYTES (4096 in unit tests)
    error = error_of(lambda: predict(channel, predict_request(x=big)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (BackendUnavailable("tfserving toy v2: unavailable (UNAVAILABLE): down"), grpc.StatusCode.UNAVAILABLE),
        (BackendTimeout("tfserving toy v2: no answer within the deadline"), grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_backend_failures_map_to_their_status(channel, fake_backends, failure, code):
    fake_backends["tfserving"].fail = failure
    error = error_of(lambda: predict(channel, predict_request(version=2)))
    assert (error.code(), error.details()) == (code, failure.message)


def test_output_filter(channel):
    response = predict(channel, predict_request(version=2, x=X))
    assert set(response.outputs) == {"y"}
    request = predict_request(version=2)
    request.output_filter.append("nope")
    error = error_of(lambda: predict(channel, request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "unknown output 'nope' (outputs: y)"


def test_inference_keys_as_metadata(grpc_settings, fake_backends):
    from fastapi.testclient import TestClient

    from gateway.app import create_app

    settings = grpc_settings.model_copy(update={"inference_keys": [SecretStr("key-0123456789abcdef")]})
    with (
        TestClient(create_app(settings, backends=fake_backends)),
        grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as chan,
    ):
        error = error_of(lambda: predict(chan, predict_request(version=2)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details().startswith("inference needs an API key")
        wrong = error_of(lambda: predict(chan, predict_request(version=2), metadata=[("x-api-key", "nope")]))
        assert (wrong.code(), wrong.details()) == (grpc.StatusCode.UNAUTHENTICATED, "the API key is not valid")
        for metadata in ([("authorization", "Bearer key-0123456789abcdef")], [("x-api-key", "key-0123456789abcdef")]):
            assert predict(chan, predict_request(version=2), metadata=metadata).model_spec.version.value == 2


def test_sticky_canary_from_metadata(grpc_client, channel):
    client, _ = grpc_client
    r = client.put(
        "/admin/models/toy/traffic",
        json={"canary": 3, "percent": 50, "sticky_header": "X-User"},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    versions = {
        user: {
            predict(channel, predict_request(), metadata=[("x-user", user)]).model_spec.version.value for _ in range(5)
        }
        for user in ("ann", "bob", "cy", "dee", "eve", "fay")
    }
    assert all(len(seen) == 1 for seen in versions.values()), versions  # sticky
    assert {v for seen in versions.values() for v in seen} == {1, 3}  # both sides reached


def test_metrics_under_the_tfserving_grpc_protocol(channel):
    def count(code: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "gateway_requests_total",
            {"model": "toy", "version": "2", "backend": "tfserving", "protocol": "tfserving_grpc", "code": code},
        )
        return value or 0.0

    before_ok, before_bad = count("200"), count("400")
    predict(channel, predict_request(version=2))
    error_of(lambda: predict(channel, predict_request(version=2, x=np.ones((1, 5), np.float32))))
    # An error's status reaches the client just before the server's handler records it.
    wait_until(lambda: count("400") == before_bad + 1, "the failed call counted")
    assert (count("200"), count("400")) == (before_ok + 1, before_bad + 1)


def test_get_model_metadata(channel):
    request = pb.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "toy"
    response = unary(channel, METADATA, request, pb.GetModelMetadataResponse)
    assert (response.model_spec.name, response.model_spec.version.value) == ("toy", 1)
    assert response.model_spec.signature_name == ""  # as get_model_metadata_impl.cc fills it
    signatures = pb.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    sig = signatures.signature_def["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert (sig.inputs["x"].dtype, [d.size for d in sig.inputs["x"].tensor_shape.dim]) == (tf_pb2.DT_FLOAT, [-1, 4])
    assert set(sig.outputs) == {"y"}
    request.model_spec.version.value = 2
    assert unary(channel, METADATA, request, pb.GetModelMetadataResponse).model_spec.version.value == 2
    missing = pb.GetModelMetadataRequest()
    missing.model_spec.name = "toy"
    error = error_of(lambda: unary(channel, METADATA, missing, pb.GetModelMetadataResponse))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )


def test_get_model_status(channel, fake_backends):
    request = pb.GetModelStatusRequest()
    request.model_spec.name = "toy"
    response = unary(channel, STATUS, request, pb.GetModelStatusResponse)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (1, pb.ModelVersionStatus.AVAILABLE),
        (2, pb.ModelVersionStatus.AVAILABLE),
        (3, pb.ModelVersionStatus.AVAILABLE),
    ]
    request.model_spec.version.value = 2
    fake_backends["tfserving"].unloaded.add(("toy", 2))
    response = unary(channel, STATUS, request, pb.GetModelStatusResponse)
    [status] = response.model_version_status
    assert (status.version, status.state) == (2, pb.ModelVersionStatus.UNKNOWN)
    assert status.status.error_message == "Could not find version 2 of model toy"
    request.model_spec.name = "nope"
    error = error_of(lambda: unary(channel, STATUS, request, pb.GetModelStatusResponse))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "model 'nope' not found")


def test_the_client_deadline_bounds_the_backend_call(channel, fake_backends, monkeypatch):
    import asyncio

    from gateway.backends.deadline import within

    given: list[float] = []

    async def slow(target, request):
        given.append(within(30.0))  # what an adapter would give its backend call
        await asyncio.sleep(3.0)
        raise AssertionError("the client gave up long ago")

    predict(channel, predict_request(version=2))  # connected first: the 1 s below is the call's alone
    monkeypatch.setattr(fake_backends["tfserving"], "infer", slow)
    error = error_of(lambda: predict(channel, predict_request(version=2), timeout=1.0))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: given, "the backend called")
    # The client's 1 s, as gRPC carries it (its timeout header rounds), not the adapter's 30 s.
    assert 0 < given[0] < 1.5


def test_a_call_past_its_deadline_counts_as_504(channel, fake_backends, monkeypatch):
    import asyncio

    async def slow(target, request):
        await asyncio.sleep(3.0)
        raise AssertionError("cancelled before this")

    monkeypatch.setattr(fake_backends["tfserving"], "infer", slow)

    def count() -> float:
        labels = {"model": "toy", "version": "2", "backend": "tfserving", "protocol": "tfserving_grpc", "code": "504"}
        return metrics.REGISTRY.get_sample_value("gateway_requests_total", labels) or 0.0

    before = count()
    error = error_of(lambda: predict(channel, predict_request(version=2), timeout=0.6))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: count() == before + 1, "the late call counted as 504", timeout=5)
