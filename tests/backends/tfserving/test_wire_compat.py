"""The gateway's own TF Serving messages are wire-compatible with the official ones.

Serialize with one, parse with the other, compare field by field, for every dtype the gateway
sends or receives; and check every field the lean protos declare against the official descriptor.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.backends.tfserving.codec import from_tensor_proto, to_tensor_proto
from gateway.backends.tfserving.protos import serving_pb2 as lean
from gateway.backends.tfserving.protos import tensorflow_pb2 as lean_tf

official = pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason="needs the local extra")
tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

ARRAYS = {
    "FP32": np.array([[1.5, -2.25], [3.0, 4.125]], dtype=np.float32),
    "FP64": np.array([1e-300, -2.5, 3.0], dtype=np.float64),
    "FP16": np.array([[0.5, -1.0, 65504.0]], dtype=np.float16),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-32768, 1, 32767], dtype=np.int16),
    "INT32": np.array([[-(2**31), 7], [2**31 - 1, 0]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "UINT8": np.array([0, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "BOOL": np.array([[True, False, True]], dtype=np.bool_),
    "BYTES": np.array([b"caf\xc3\xa9", b"\x00\xff", b""], dtype=object),
}

PAIRS = [
    (lean.PredictRequest, predict_pb2.PredictRequest),
    (lean.PredictResponse, predict_pb2.PredictResponse),
    (lean.ModelSpec, model_pb2.ModelSpec),
    (lean.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
    (lean.GetModelMetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse),
    (lean.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap),
    (lean.GetModelStatusRequest, get_model_status_pb2.GetModelStatusRequest),
    (lean.GetModelStatusResponse, get_model_status_pb2.GetModelStatusResponse),
    (lean.ModelVersionStatus, get_model_status_pb2.ModelVersionStatus),
    (lean.ReloadConfigRequest, model_management_pb2.ReloadConfigRequest),
    (lean.ReloadConfigResponse, model_management_pb2.ReloadConfigResponse),
    (lean.ModelServerConfig, model_server_config_pb2.ModelServerConfig),
    (lean.ModelConfig, model_server_config_pb2.ModelConfig),
    (lean_tf.TensorProto, tf.make_tensor_proto(1.0).__class__),
]


def _walk(ours, theirs, seen):
    if ours.full_name in seen:
        return
    seen.add(ours.full_name)
    assert ours.full_name == theirs.full_name
    for field in ours.fields:
        other = theirs.fields_by_number.get(field.number)
        assert other is not None, f"{ours.full_name}.{field.name}: no field {field.number} upstream"
        assert (field.name, field.type, field.is_repeated) == (
            other.name,
            other.type,
            other.is_repeated,
        ), f"{ours.full_name}.{field.name} differs from the official field"
        if field.message_type is not None:
            _walk(field.message_type, other.message_type, seen)
        if field.enum_type is not None:
            theirs_values = {v.name: v.number for v in other.enum_type.values}
            for value in field.enum_type.values:
                assert theirs_values.get(value.name) == value.number, f"{field.enum_type.full_name}.{value.name}"


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p[0].DESCRIPTOR.full_name)
def test_every_declared_field_matches_the_official_descriptor(pair):
    _walk(pair[0].DESCRIPTOR, pair[1].DESCRIPTOR, set())


@pytest.mark.parametrize("datatype", sorted(ARRAYS))
def test_lean_request_parses_with_official_messages(datatype):
    array = ARRAYS[datatype]
    ours = lean.PredictRequest()
    ours.model_spec.name = "mlp"
    ours.model_spec.version.value = 7
    ours.model_spec.signature_name = "serving_default"
    ours.output_filter.append("probabilities")
    to_tensor_proto(array, ours.inputs["x"])

    theirs = predict_pb2.PredictRequest.FromString(ours.SerializeToString())

    assert theirs.model_spec.name == "mlp"
    assert theirs.model_spec.version.value == 7
    assert theirs.model_spec.WhichOneof("version_choice") == "version"
    assert theirs.model_spec.signature_name == "serving_default"
    assert list(theirs.output_filter) == ["probabilities"]
    decoded = tf.make_ndarray(theirs.inputs["x"])
    assert decoded.shape == array.shape
    if datatype == "BYTES":
        assert decoded.tolist() == array.tolist()
    else:
        assert decoded.dtype == array.dtype
        np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("datatype", sorted(ARRAYS))
@pytest.mark.parametrize("packed", [True, False], ids=["tensor_content", "typed_values"])
def test_official_response_parses_with_lean_messages(datatype, packed):
    array = ARRAYS[datatype]
    theirs = predict_pb2.PredictResponse()
    theirs.model_spec.name = "mlp"
    theirs.model_spec.version.value = 2
    proto = tf.make_tensor_proto(array)
    if not packed and datatype != "BYTES":
        # Rewrite into the typed *_val field, as some servers and clients write tensors.
        values = array.ravel()
        proto.ClearField("tensor_content")
        field = {
            "FP32": "float_val", "FP64": "double_val", "INT64": "int64_val",
            "UINT32": "uint32_val", "UINT64": "uint64_val", "BOOL": "bool_val",
            "FP16": "half_val",
        }.get(datatype, "int_val")  # fmt: skip
        if datatype == "FP16":
            values = values.view(np.uint16)
        proto.ClearField(field)
        getattr(proto, field).extend(values.tolist())
    theirs.outputs["y"].CopyFrom(proto)

    ours = lean.PredictResponse.FromString(theirs.SerializeToString())

    assert ours.model_spec.version.value == 2
    decoded = from_tensor_proto(ours.outputs["y"])
    assert decoded.shape == array.shape
    if datatype == "BYTES":
        assert decoded.tolist() == array.tolist()
    else:
        assert decoded.dtype == array.dtype
        np.testing.assert_array_equal(decoded, array)


def test_repeated_single_value_fills_the_shape():
    proto = tf.make_tensor_proto(np.full((2, 3), 0.5, dtype=np.float32))
    proto.ClearField("tensor_content")
    proto.float_val[:] = [0.5]
    ours = lean_tf.TensorProto.FromString(proto.SerializeToString())
    np.testing.assert_array_equal(from_tensor_proto(ours), np.full((2, 3), 0.5, np.float32))


def test_status_and_reload_round_trip():
    theirs = get_model_status_pb2.GetModelStatusResponse()
    item = theirs.model_version_status.add(version=3, state=30)
    item.status.error_code = 5
    item.status.error_message = "not found"
    ours = lean.GetModelStatusResponse.FromString(theirs.SerializeToString())
    assert ours.model_version_status[0].version == 3
    assert lean.ModelVersionStatus.State.Name(ours.model_version_status[0].state) == "AVAILABLE"
    assert ours.model_version_status[0].status.error_message == "not found"

    req = lean.ReloadConfigRequest()
    cfg = req.config.model_config_list.config.add(name="mlp", base_path="/models/mlp", model_platform="tensorflow")
    cfg.model_version_policy.specific.versions.extend([2, 4])
    cfg.version_labels["stable"] = 2
    parsed = model_management_pb2.ReloadConfigRequest.FromString(req.SerializeToString())
    model = parsed.config.model_config_list.config[0]
    assert (model.name, model.base_path, model.model_platform) == (
        "mlp",
        "/models/mlp",
        "tensorflow",
    )
    assert list(model.model_version_policy.specific.versions) == [2, 4]
    assert dict(model.version_labels) == {"stable": 2}


def test_metadata_any_unpacks_into_lean_signature_map():
    from tensorflow.core.protobuf import meta_graph_pb2

    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig = sig_map.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    x = sig.inputs["x"]
    x.name = "serving_default_x:0"
    x.dtype = 1
    x.tensor_shape.dim.add(size=-1)
    x.tensor_shape.dim.add(size=4)
    assert isinstance(x, meta_graph_pb2.TensorInfo)
    theirs = get_model_metadata_pb2.GetModelMetadataResponse()
    theirs.metadata["signature_def"].Pack(sig_map)

    ours = lean.GetModelMetadataResponse.FromString(theirs.SerializeToString())
    unpacked = lean.SignatureDefMap()
    assert ours.metadata["signature_def"].Unpack(unpacked)
    info = unpacked.signature_def["serving_default"].inputs["x"]
    assert info.dtype == lean_tf.DT_FLOAT
    assert [d.size for d in info.tensor_shape.dim] == [-1, 4]
