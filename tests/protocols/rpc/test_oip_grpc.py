"""The Open Inference Protocol over gRPC, called with the Triton client unchanged (its own
``service_pb2`` messages on the wire), against the in-process gRPC server and the fake backends."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

from gateway.protocols.rpc.protos import inference_pb2 as pb
from tests.protocols.rpc.conftest import unary

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@pytest.fixture
def oip(grpc_client):
    client = triton.InferenceServerClient(grpc_client[1])
    yield client
    client.close()


def infer(client, model="toy", version="", x=X, name="x", datatype="FP32", **kwargs):
    tensor = triton.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)  # packed into raw_input_contents
    return client.infer(model, [tensor], model_version=version, **kwargs)


@pytest.mark.parametrize(("version", "backend"), [("1", "torchserve"), ("2", "tfserving")])
def test_infer_raw_on_either_stack(oip, version, backend):
    result = infer(oip, version=version, request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("y"), X * int(version))
    answer = result.get_response()
    assert (answer.model_name, answer.model_version, answer.id) == ("toy", version, "r-1")
    assert len(answer.raw_output_contents) == 1  # packed, as the request was


def test_infer_with_typed_contents(channel):
    request = pb.ModelInferRequest(model_name="toy", model_version="2")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    answer = unary(channel, "/inference.GRPCInferenceService/ModelInfer", request, pb.ModelInferResponse)
    [output] = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [1, 4])
    assert list(output.contents.fp32_contents) == [2.0, 4.0, 6.0, 8.0]
    assert not answer.raw_output_contents


def test_default_version_is_the_stable_one(oip):
    assert infer(oip).get_response().model_version == "1"


def test_int64_and_bytes(oip):
    ints = np.array([1, -(2**40), 2**62], dtype=np.int64)
    np.testing.assert_array_equal(infer(oip, "ints", x=ints, name="n", datatype="INT64").as_numpy("m"), ints)
    words = np.array([b"a", b"\xff\x00", b""], dtype=object)
    out = infer(oip, "words", x=words, name="text", datatype="BYTES").as_numpy("echo")
    assert out.tolist() == [b"a", b"\xff\x00", b""]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"model": "nope"}, "StatusCode.NOT_FOUND", "model 'nope' not found"),
        ({"version": "9"}, "StatusCode.NOT_FOUND", "model 'toy' has no version 9 (versions: 1, 2, 3)"),
        ({"version": "v1"}, "StatusCode.INVALID_ARGUMENT", None),
        (
            {"x": np.ones((1, 5), np.float32)},
            "StatusCode.INVALID_ARGUMENT",
            "input 'x': expected shape [-1, 4], got [1, 5]",
        ),
        (
            {"x": np.ones((1, 4), np.float64), "datatype": "FP64"},
            "StatusCode.INVALID_ARGUMENT",
            "input 'x': expected datatype FP32, got FP64",
        ),
    ],
)
def test_errors_as_the_triton_client_sees_them(oip, kwargs, status, message):
    with pytest.raises(InferenceServerException) as info:
        infer(oip, **kwargs)
    assert info.value.status() == status
    if message is not None:
        assert info.value.message() == message


def test_raw_contents_that_disagree_with_the_shape(channel):
    request = pb.ModelInferRequest(model_name="toy", model_version="2")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(b"\x00" * 12)
    with pytest.raises(Exception) as info:
        unary(channel, "/inference.GRPCInferenceService/ModelInfer", request, pb.ModelInferResponse)
    assert info.value.details() == "input 'x': raw contents have 12 bytes; 4 values of FP32 need 16"


def test_bytes_lengths_past_the_end(channel):
    request = pb.ModelInferRequest(model_name="words")
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x09\x00\x00\x00abc")
    with pytest.raises(Exception) as info:
        unary(channel, "/inference.GRPCInferenceService/ModelInfer", request, pb.ModelInferResponse)
    # The same message as the REST door's binary tensor data (one BYTES reader for both).
    assert info.value.details() == "input 'text': BYTES element 0 is 9 bytes long, past the end of the input's 7 bytes"


def test_health_and_metadata(oip, fake_backends):
    assert oip.is_server_live()
    assert oip.is_server_ready()
    assert oip.get_server_metadata().name == "twin-stack-gateway"
    assert oip.is_model_ready("toy")
    assert oip.is_model_ready("toy", "2")
    fake_backends["tfserving"].unloaded.add(("toy", 2))
    assert not oip.is_model_ready("toy", "2")
    meta = oip.get_model_metadata("toy")
    assert (meta.name, list(meta.versions), meta.platform) == ("toy", ["1", "2", "3"], "pytorch_torchserve")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
    assert list(oip.get_model_metadata("toy", "2").versions) == ["2"]
    with pytest.raises(InferenceServerException) as info:
        oip.get_model_metadata("nope")
    assert (info.value.status(), info.value.message()) == ("StatusCode.NOT_FOUND", "model 'nope' not found")


def test_messages_are_wire_compatible_with_tritons_service_pb2():
    theirs = triton_pb2.ModelInferRequest(model_name="m", model_version="3", id="i")
    tensor = theirs.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    tensor.parameters["p"].int64_param = 7
    theirs.outputs.add(name="y").parameters["binary_data"].bool_param = True
    theirs.parameters["q"].string_param = "s"
    theirs.raw_input_contents.append(b"\x01\x02")
    ours = pb.ModelInferRequest.FromString(theirs.SerializeToString())
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    answer = pb.ModelInferResponse(model_name="m", model_version="3", id="i")
    answer.outputs.add(name="y", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"z")
    answer.raw_output_contents.append(b"\x00")
    back = triton_pb2.ModelInferResponse.FromString(answer.SerializeToString())
    assert back.SerializeToString(deterministic=True) == answer.SerializeToString(deterministic=True)
    meta = pb.ModelMetadataResponse(name="m", versions=["1"], platform="p")
    meta.inputs.add(name="x", datatype="FP32", shape=[-1, 4])
    parsed = triton_pb2.ModelMetadataResponse.FromString(meta.SerializeToString())
    assert (parsed.inputs[0].name, list(parsed.inputs[0].shape)) == ("x", [-1, 4])
    for name in ("ServerLiveResponse", "ServerReadyResponse", "ModelReadyResponse", "ServerMetadataResponse"):
        assert getattr(triton_pb2, name).DESCRIPTOR.full_name == getattr(pb, name).DESCRIPTOR.full_name
