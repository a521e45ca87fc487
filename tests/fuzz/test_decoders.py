"""Property tests of the tensor decoders and encoders the protocols and the TF Serving adapter use.

Two properties throughout: any JSON-like value (``None``, booleans, integers of any size, floats
with NaN and infinities, strings, lists, objects, nested deeply) gives either a valid result or a
``GatewayError``, never any other exception; and a valid tensor, written the way a client (or
backend) writes it, decodes to exactly the array it came from: dtype, shape and every value.
"""

from __future__ import annotations

import json
import warnings
from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.backends.tfserving.codec import from_tensor_proto, to_tensor_proto
from gateway.backends.tfserving.protos import tensorflow_pb2 as tf_pb2
from gateway.core import tensors
from gateway.core.errors import BackendError, BadRequest, GatewayError
from gateway.core.restjson import decode_outputs, decode_request, encode_outputs
from gateway.core.tensors import DATATYPES, Signature, TensorSpec, check_shape, to_array, to_json_value
from gateway.protocols.oip import decode_infer_request
from tests.fuzz.strategies import (
    ANY_SHAPE,
    ANY_VALUE,
    FUZZ,
    JSON_SHAPES,
    JSON_VALUES,
    NUMERIC,
    TENSOR_VALUES,
    arrays_of,
    assert_same,
    concrete_shape,
    examples,
    flat,
    infer_payloads,
    json_representable,
    json_round_trip,
    nest,
    predict_payloads,
    signatures,
)

# A silent overflow (numpy's "overflow encountered in cast") is a finding too.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# ---------------------------------------------------------------------------------------------
# gateway.core.tensors.to_array


@settings(FUZZ, max_examples=examples(300))
@given(st.sampled_from(list(DATATYPES)), ANY_VALUE)
# Found by the random profile: an infinite input stays infinite; the oracle took it for overflow.
@example("FP16", float("inf"))
@example("FP16", [70000.0, float("-inf")])
def test_to_array_gives_the_datatype_or_a_bad_request_naming_the_input(datatype, value):
    try:
        array = to_array("x", value, datatype)
    except BadRequest as exc:
        assert "input 'x'" in exc.message, exc.message
        return
    assert isinstance(array, np.ndarray)
    assert array.dtype == DATATYPES[datatype]
    if datatype == "BYTES":
        assert all(isinstance(v, bytes) for v in array.ravel())
    elif array.dtype.kind in "iu":  # never wrapped or truncated
        assert [int(v) for v in array.ravel()] == flat(value)
    elif array.dtype.kind == "f":  # rounded to the nearest value, never overflowed to infinity
        given = np.asarray(flat(value), dtype=np.float64)
        assert np.array_equal(np.isinf(array.ravel()), np.isinf(given)), (value, array)


@FUZZ
@given(
    st.sampled_from(list(DATATYPES)).flatmap(
        lambda d: st.tuples(st.just(d), JSON_SHAPES.flatmap(lambda s: arrays_of(d, s)))
    )
)
def test_to_array_decodes_a_valid_tensor_exactly(datatype_and_array):
    datatype, want = datatype_and_array
    assert_same(to_array("x", json_round_trip(to_json_value(want)), datatype), want)


@pytest.mark.parametrize(
    ("value", "datatype", "message"),
    [
        # The fuzzer's find: integers beyond int64 mixed with others come out of numpy as float64,
        # so a valid UINT64 tensor ([max, 0]) was refused; out-of-range ones said "floating-point".
        ([1, 2**64 - 1], "UINT64", None),
        ([-(2**63), 2**63 - 1], "INT64", None),
        ([-1, 2**64 - 1], "UINT64", "input 'x': value out of range for UINT64 [0, 18446744073709551615]"),
        ([-1, 2**63], "INT64", "input 'x': value out of range for INT64 [-9223372036854775808, 9223372036854775807]"),
        ([2**70], "INT32", "input 'x': value out of range for INT32 [-2147483648, 2147483647]"),
        ([1, 2.5], "INT32", "input 'x': expected INT32 values, got floating-point numbers"),
        # The fuzzer's find: a finite value beyond the float type's range silently became infinity.
        ([70000.0], "FP16", "input 'x': value out of range for FP16 [-65504.0, 65504.0]"),
        (
            [[1.0], [1e39]],
            "FP32",
            "input 'x': value out of range for FP32 [-3.4028234663852886e+38, 3.4028234663852886e+38]",
        ),
        # A client's NaN, written as null (as JavaScript does), was "mixed or nested values".
        ([None, 1.0], "FP32", "input 'x': expected FP32 values, got null (JSON has no NaN or infinity"),
        # The fuzzer's find: these two messages did not name the input.
        ({"b64": "!!"}, "BYTES", "input 'x': 'b64' value is not valid base64"),
        ([{"b64": 1}], "BYTES", 'input \'x\': a tensor value object must be {"b64": "<base64 string>"}'),
        # Seen while fixing those: ragged, null and boolean BYTES values were all "numbers".
        ([["a"], ["b", "c"]], "BYTES", "input 'x': values are not a rectangular tensor"),
        (["a", None], "BYTES", "input 'x': expected BYTES values (strings or b64), got null"),
        ([True], "BYTES", "input 'x': expected BYTES values (strings or b64), got booleans"),
        ([1.5], "BYTES", "input 'x': expected BYTES values (strings or b64), got numbers"),
        # The fuzzer's find: BYTES nested ~1000 deep (orjson parses up to 1024) was a RecursionError.
        (nest(990, "a"), "BYTES", "input 'x': values are nested deeper than 64 dimensions"),
        (nest(990, 1), "FP32", "input 'x': values are not a rectangular tensor"),
    ],
)
def test_to_array_regressions(value, datatype, message):
    if message is None:
        array = to_array("x", value, datatype)
        assert array.dtype == DATATYPES[datatype] and array.tolist() == value
    else:
        with pytest.raises(BadRequest) as caught:
            to_array("x", value, datatype)
        assert caught.value.message.startswith(message), caught.value.message


@pytest.mark.parametrize("depth", [33, 64])
def test_bytes_of_33_to_64_dimensions_decode(depth):
    """The fuzzer's find: a RuntimeError (numpy's ``.flat`` stops at 32 dimensions)."""
    assert to_array("x", nest(depth, "a"), "BYTES").shape == (1,) * depth
    assert to_array("x", nest(depth, 1), "INT8").shape == (1,) * depth


# ---------------------------------------------------------------------------------------------
# gateway.core.restjson.decode_request (TF Serving REST row and column forms)


def _assert_decoded(inputs: dict[str, np.ndarray], signature: Signature) -> None:
    assert list(inputs) == [s.name for s in signature.inputs]
    for spec in signature.inputs:
        assert inputs[spec.name].dtype == DATATYPES[spec.datatype]
        check_shape(spec, inputs[spec.name])


@FUZZ
@given(st.data(), signatures())
def test_decode_request_gives_checked_arrays_or_a_bad_request(data, signature):
    payload = data.draw(predict_payloads(signature))
    try:
        inputs, form = decode_request(payload, signature)
    except BadRequest:
        return
    assert form in ("row", "column")
    _assert_decoded(inputs, signature)


@FUZZ
@given(st.data(), signatures(batch=True, valid=True), st.integers(1, 3))
def test_decode_request_decodes_valid_row_and_column_bodies_exactly(data, signature, batch):
    want = {
        s.name: data.draw(
            concrete_shape(s, batch).filter(json_representable).flatmap(lambda shape, s=s: arrays_of(s.datatype, shape))
        )
        for s in signature.inputs
    }
    rows: list[Any] = [{n: to_json_value(a[i, ...]) for n, a in want.items()} for i in range(batch)]
    columns: Any = {n: to_json_value(a) for n, a in want.items()}
    bodies = [({"instances": rows}, "row"), ({"inputs": columns, "signature_name": "serving_default"}, "column")]
    if len(want) == 1:  # one input: bare values too
        (only,) = want.values()
        rows = [to_json_value(only[i, ...]) for i in range(batch)]
        bodies += [({"instances": rows}, "row"), ({"inputs": to_json_value(only)}, "column")]
    for body, form in bodies:
        inputs, got_form = decode_request(json_round_trip(body), signature)
        assert got_form == form
        assert list(inputs) == list(want)
        for name, array in want.items():
            assert_same(inputs[name], array)


# ---------------------------------------------------------------------------------------------
# gateway.protocols.oip.decode_infer_request


@settings(FUZZ, max_examples=examples(250))
@given(st.data(), signatures())
def test_decode_infer_request_gives_checked_arrays_or_a_bad_request(data, signature):
    payload = data.draw(infer_payloads(signature) | ANY_VALUE)
    try:
        inputs, names = decode_infer_request(payload, signature)
    except BadRequest:
        return
    assert set(inputs) == {s.name for s in signature.inputs}
    for spec in signature.inputs:
        assert inputs[spec.name].dtype == DATATYPES[spec.datatype]
        check_shape(spec, inputs[spec.name])
    assert set(names) <= {s.name for s in signature.outputs}


@FUZZ
@given(st.data(), signatures(valid=True))
def test_decode_infer_request_decodes_valid_bodies_exactly(data, signature):
    want = {
        s.name: data.draw(concrete_shape(s).flatmap(lambda shape, s=s: arrays_of(s.datatype, shape)))
        for s in signature.inputs
    }
    outputs = data.draw(st.lists(st.sampled_from([s.name for s in signature.outputs]), unique=True))
    body = {
        "id": "fuzz",
        "inputs": [
            {"name": s.name, "datatype": s.datatype, "shape": list(a.shape), "data": to_json_value(a.reshape(-1))}
            for s, a in zip(signature.inputs, want.values(), strict=True)
        ],
        "outputs": [{"name": n} for n in outputs],
    }
    inputs, names = decode_infer_request(json_round_trip(body), signature)
    assert names == tuple(outputs)
    assert list(inputs) == list(want)
    for name, array in want.items():
        assert_same(inputs[name], array)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        # The fuzzer's find: an unhashable datatype was a TypeError (500).
        ({"name": "x", "datatype": ["FP32"], "shape": [1], "data": [1]}, "input 'x': datatype must be one of BOOL,"),
        ({"name": "x", "datatype": {}, "shape": [1], "data": [1]}, "input 'x': datatype must be one of BOOL,"),
        # The fuzzer's find: a dimension beyond int64 was an OverflowError (500); a product that
        # wraps around int64 (the second) passed the size check and failed in reshape.
        (
            {"name": "x", "datatype": "FP32", "shape": [2**70], "data": [1]},
            "input 'x': shape [1180591620717411303424] needs 1180591620717411303424 values, got 1",
        ),
        (
            {"name": "x", "datatype": "FP32", "shape": [2**32, 2**32], "data": []},
            "input 'x': shape [4294967296, 4294967296] needs 18446744073709551616 values, got 0",
        ),
    ],
)
def test_decode_infer_request_regressions(item, message):
    signature = Signature((TensorSpec("x", "FP32", (-1,)),), ())
    with pytest.raises(BadRequest) as caught:
        decode_infer_request({"inputs": [item]}, signature)
    assert caught.value.message.startswith(message), caught.value.message


# ---------------------------------------------------------------------------------------------
# gateway.core.restjson.decode_outputs (a backend's REST answer)


def answer_bodies(signature: Signature) -> st.SearchStrategy[bytes]:
    shallow = JSON_VALUES | TENSOR_VALUES  # DEEP comes as bytes, below
    named = st.fixed_dictionaries({}, optional={s.name: shallow for s in signature.outputs})
    value = shallow | named | st.lists(named | shallow, max_size=3)
    payload = st.fixed_dictionaries({}, optional={"predictions": value, "outputs": value}) | shallow
    deep = st.tuples(st.sampled_from([b"predictions", b"outputs"]), st.integers(60, 1000)).map(
        lambda t: b'{"' + t[0] + b'": ' + b"[" * t[1] + b'"a"' + b"]" * t[1] + b"}"
    )
    # The standard library writes any integer, and NaN and infinities as Python's json does.
    return payload.map(lambda p: json.dumps(p).encode()) | deep | st.binary(max_size=20)


@FUZZ
@given(st.data(), signatures(), st.sampled_from(["row", "column"]), st.booleans())
def test_decode_outputs_gives_arrays_or_a_backend_error(data, signature, form, with_signature):
    body = data.draw(answer_bodies(signature))
    try:
        outputs = decode_outputs(body, form, signature if with_signature else None)
    except BackendError:
        return
    assert all(isinstance(a, np.ndarray) for a in outputs.values())
    if with_signature:
        for spec in signature.outputs:
            if spec.name in outputs:
                assert outputs[spec.name].dtype == DATATYPES[spec.datatype]


ANY_OUTPUTS = st.dictionaries(
    st.sampled_from(["y", "z", "b64", "a b"]),
    st.sampled_from(list(DATATYPES)).flatmap(lambda d: arrays_of(d, ANY_SHAPE, finite=False)),
    min_size=1,
    max_size=3,
)


@FUZZ
@given(ANY_OUTPUTS, st.sampled_from(["row", "column"]))
# Found by the random profile: the oracle took TF Serving's NaN/Infinity tokens for broken JSON.
@example({"y": np.array(False), "z": np.array(np.inf, dtype=np.float16)}, "column")
def test_encode_outputs_gives_json_or_a_gateway_error(outputs, form):
    try:
        body = encode_outputs(outputs, form)
    except GatewayError:
        return
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # TF Serving writes non-finite floats as bare NaN/Infinity/-Infinity (RapidJSON's
        # kWriteNanAndInfFlag), and so does the gateway: only then may a body leave strict JSON.
        assert any(a.dtype.kind == "f" and not np.isfinite(a).all() for a in outputs.values()), body
        parsed = json.loads(body)
    assert isinstance(parsed, dict)


@FUZZ
@given(st.data(), signatures(batch=True, valid=True), st.sampled_from(["row", "column"]), st.integers(1, 3))
def test_encoded_outputs_decode_exactly(data, signature, form, batch):
    want = {
        s.name: data.draw(
            concrete_shape(s, batch).filter(json_representable).flatmap(lambda shape, s=s: arrays_of(s.datatype, shape))
        )
        for s in signature.outputs
    }
    got = decode_outputs(encode_outputs(want, form), form, signature)
    assert list(got) == list(want)
    for name, array in want.items():  # float16 travels as float32, which holds every float16 exactly
        assert_same(got[name], array)


@pytest.mark.parametrize(
    ("body", "form", "message"),
    [
        # The fuzzer's find: a row-form answer that is not a list of objects was a KeyError or TypeError.
        (b'{"predictions": {"y": [1]}}', "row", None),
        (b'{"predictions": 5}', "row", None),
        (
            b'{"predictions": [{"y": 1}, 2]}',
            "row",
            "backend answer: 'predictions'[1] is not an object of named outputs",
        ),
        (b'{"predictions": [{"y": 1}, {"z": 2}]}', "row", "backend answer: 'predictions'[1] has no output 'y'"),
        # The fuzzer's find: a ragged answer for an output the signature does not type was a ValueError.
        (
            b'{"outputs": {"other": [[1], [1, 2]]}}',
            "column",
            "backend output 'other': values are not a rectangular tensor",
        ),
        # Seen while fixing those: the message read "backend output input 'y': ...".
        (b'{"outputs": {"y": ["a"]}}', "column", "backend output 'y': expected FP32 values, got strings"),
        # Seen while bounding the floats of test_inference_http (the fake's x * 3 overflows, orjson
        # writes the infinity as null): the message said "mixed or nested values".
        (
            b'{"outputs": {"y": [null, 1.0]}}',
            "column",
            "backend output 'y': expected FP32 values, got null (JSON has no NaN",
        ),
    ],
)
def test_decode_outputs_regressions(body, form, message):
    signature = Signature((TensorSpec("x", "FP32", (-1,)),), (TensorSpec("y", "FP32", (-1,)),))
    if message is None:
        assert decode_outputs(body, form, signature)
    else:
        with pytest.raises(BackendError) as caught:
            decode_outputs(body, form, signature)
        assert caught.value.message.startswith(message), caught.value.message


def test_a_b64_value_is_not_taken_for_named_outputs():
    """The fuzzer's find (a KeyError on ``[{"b64": ""}, {}]`` here, a wrong answer in
    test_inference_http): a BYTES output whose first value is ``{"b64": ...}`` was read as rows of
    named outputs, and came back as an output named b64."""
    signature = Signature((TensorSpec("x", "BYTES", (-1,)),), (TensorSpec("y", "BYTES", (-1,)),))
    want = {"y": np.array([b"\xff", b"ok"], dtype=object)}
    for form in ("row", "column"):
        assert_same(decode_outputs(encode_outputs(want, form), form, signature)["y"], want["y"])
    scalar = {"y": np.array(b"\xff", dtype=object)}
    assert_same(decode_outputs(encode_outputs(scalar, "column"), "column", signature)["y"], scalar["y"])


def test_encode_outputs_regressions():
    """The fuzzer's finds: the row form of several 1-d outputs crashed on BYTES (AttributeError) and
    wrapped each number in a list; a 0-d output was a TypeError from orjson."""
    a = np.array([1.0, 2.0], dtype=np.float32)
    b = np.array([b"p", b"q"], dtype=object)
    rows = [{"a": 1.0, "b": "p"}, {"a": 2.0, "b": "q"}]
    assert orjson.loads(encode_outputs({"a": a, "b": b}, "row")) == {"predictions": rows}
    assert orjson.loads(encode_outputs({"a": np.array(1.5, dtype=np.float32)}, "column")) == {"outputs": 1.5}
    assert orjson.loads(encode_outputs({"a": np.array(7, dtype=np.uint64)}, "row")) == {"predictions": 7}


def test_row_form_of_several_outputs_without_a_batch_dimension_is_a_bad_request():
    """The fuzzer's find: an IndexError (500) when several outputs include a 0-d one."""
    outputs = {"a": np.array(1.0, dtype=np.float32), "b": np.array([1.0], dtype=np.float32)}
    with pytest.raises(BadRequest, match="output 'a' has no batch dimension"):
        encode_outputs(outputs, "row")


# ---------------------------------------------------------------------------------------------
# gateway.backends.tfserving.codec: array -> TensorProto -> array


def _wire(proto: tf_pb2.TensorProto) -> tf_pb2.TensorProto:
    return tf_pb2.TensorProto.FromString(proto.SerializeToString())


@pytest.mark.parametrize("datatype", NUMERIC)
@settings(FUZZ, max_examples=examples(50))  # per datatype
@given(data=st.data())
def test_tensor_proto_round_trip_is_exact(datatype, data):
    want = data.draw(arrays_of(datatype, ANY_SHAPE, finite=False))
    assert_same(from_tensor_proto(_wire(to_tensor_proto(want))), want)


@FUZZ
@given(arrays_of("BYTES", ANY_SHAPE))
def test_tensor_proto_round_trip_of_bytes_is_exact(want):
    assert_same(from_tensor_proto(_wire(to_tensor_proto(want))), want)


_VAL_FIELD = {
    np.dtype(np.float32): "float_val",
    np.dtype(np.float64): "double_val",
    np.dtype(np.float16): "half_val",
    np.dtype(np.int8): "int_val",
    np.dtype(np.int16): "int_val",
    np.dtype(np.int32): "int_val",
    np.dtype(np.uint8): "int_val",
    np.dtype(np.uint16): "int_val",
    np.dtype(np.int64): "int64_val",
    np.dtype(np.uint32): "uint32_val",
    np.dtype(np.uint64): "uint64_val",
    np.dtype(np.bool_): "bool_val",
}


def _typed_proto(array: np.ndarray, values: np.ndarray) -> tf_pb2.TensorProto:
    """A TensorProto written the other way TensorFlow writes one: typed ``*_val`` fields."""
    proto = to_tensor_proto(array)
    proto.ClearField("tensor_content")
    flat = values.reshape(-1)
    field = _VAL_FIELD[array.dtype]
    getattr(proto, field).extend((flat.view(np.uint16) if array.dtype == np.float16 else flat).tolist())
    return proto


@pytest.mark.parametrize("datatype", NUMERIC)
@settings(FUZZ, max_examples=examples(50))  # per datatype
@given(data=st.data())
def test_typed_value_fields_decode_exactly(datatype, data):
    want = data.draw(arrays_of(datatype, ANY_SHAPE, finite=False))
    assert_same(from_tensor_proto(_wire(_typed_proto(want, want))), want)
    if want.size > 1:  # TensorFlow's shorthand: one value, repeated to fill the shape
        filled = np.full(want.shape, want.reshape(-1)[0], dtype=want.dtype)
        assert_same(from_tensor_proto(_wire(_typed_proto(want, want.reshape(-1)[:1]))), filled)


# What a backend may put in each typed field (any dtype may come with any of them).
_FIELD_VALUES = {
    "float_val": st.floats(width=32),
    "double_val": st.floats(),
    "half_val": st.integers(0, 2**16 - 1),
    "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": st.integers(-(2**63), 2**63 - 1),
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
    "bool_val": st.booleans(),
    "string_val": st.binary(max_size=4),
}


@settings(FUZZ)
@given(
    st.sampled_from(list(tf_pb2.DataType.values())),
    st.lists(st.integers(-2, 4), max_size=4),
    st.binary(max_size=24),
    st.sampled_from(sorted(_FIELD_VALUES)).flatmap(
        lambda f: st.tuples(st.just(f), st.lists(_FIELD_VALUES[f], max_size=6))
    ),
)
def test_any_tensor_proto_gives_an_array_or_a_backend_error(dtype, dims, content, field_values):
    proto = tf_pb2.TensorProto(dtype=dtype, tensor_content=content)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    field, values = field_values
    getattr(proto, field).extend(values)
    try:
        array = from_tensor_proto(_wire(proto))
    except BackendError:
        return
    assert isinstance(array, np.ndarray) and list(array.shape) == dims


def _proto(dtype: int, dims: list[int], content: bytes = b"", **fields: list[Any]) -> tf_pb2.TensorProto:
    proto = tf_pb2.TensorProto(dtype=dtype, tensor_content=content)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    for field, values in fields.items():
        getattr(proto, field).extend(values)
    return proto


@pytest.mark.parametrize(
    "proto",
    [
        pytest.param(_proto(tf_pb2.DT_HALF, [1], b"\x00\x00\x00"), id="content-not-a-multiple-of-the-item-size"),
        pytest.param(_proto(tf_pb2.DT_INT8, [3], b"\x01\x02"), id="content-not-the-shape's-size"),
        pytest.param(_proto(tf_pb2.DT_FLOAT, [0, -1]), id="negative-dimension"),
        pytest.param(_proto(tf_pb2.DT_FLOAT, [-1, -1], b"\x00" * 8), id="two-unknown-dimensions"),
        pytest.param(_proto(tf_pb2.DT_UINT8, [1], int_val=[300]), id="typed-value-out-of-range-wraps"),
    ],
)
def test_malformed_tensor_protos_are_backend_errors(proto):
    with pytest.raises(BackendError):
        from_tensor_proto(proto)


# --- the small-float shortcut of to_array: the same array, or the same error, as the general path ---
_EDGES = [0.0, -0.0, 0.1, 1e-45, 1e-320, 65504.0, 65519.9, 65520.0, 3.4028234663852886e38, 3.4028235e38, 3.5e38,
          1.7976931348623157e308, float("nan"), float("inf"), -float("inf"), 2**24 + 1, 2**53, 2**53 + 1,
          -(2**53) - 1, 2**63, 10**40, True, False, "1", None, [1.0], {}]  # fmt: skip
_SMALL_ITEMS = st.one_of(
    st.sampled_from(_EDGES), st.floats(width=64), st.integers(-(2**70), 2**70), st.integers(-70000, 70000)
)


def _general(value: Any, datatype: str) -> Any:
    """to_array with the shortcut off: the array or the error message."""
    with mock.patch.object(tensors, "_small_floats", lambda *_: None):
        try:
            return to_array("x", value, datatype)
        except BadRequest as exc:
            return exc.message


@settings(FUZZ, max_examples=examples(600))
@given(
    st.sampled_from(["FP16", "FP32", "FP64"]),
    st.one_of(
        st.lists(_SMALL_ITEMS, max_size=70),
        st.integers(1, 4).flatmap(lambda w: st.lists(st.lists(_SMALL_ITEMS, min_size=w, max_size=w), max_size=20)),
        st.lists(st.lists(_SMALL_ITEMS, max_size=5), max_size=4),  # ragged rows
    ),
)
def test_the_small_float_shortcut_gives_what_the_general_path_gives(datatype, value):
    expected = _general(value, datatype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow reaches numpy's casts on the shortcut
        try:
            got: Any = to_array("x", value, datatype)
        except BadRequest as exc:
            got = exc.message
    if isinstance(expected, str):
        assert got == expected
    else:
        assert isinstance(got, np.ndarray) and got.dtype == expected.dtype and got.shape == expected.shape
        assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_a_small_row_of_numbers_takes_the_shortcut(datatype):
    value = [[0.5, -1, 0.25, 2.0]]
    array = tensors._small_floats(value, DATATYPES[datatype])
    assert array is not None and array.dtype == DATATYPES[datatype] and array.shape == (1, 4)
    assert tensors._small_floats([[0.5, True]], DATATYPES[datatype]) is None  # a boolean: the general path's 400
    assert tensors._small_floats([0.5] * 65, DATATYPES[datatype]) is None  # larger: numpy converts faster
