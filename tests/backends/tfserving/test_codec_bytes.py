"""The tensor codec's cheaper encoding writes exactly what the reference steps did.

``to_tensor_proto`` takes an array's own bytes on a little-endian host and adds each dim with its
size in one call: the serialised bytes, and the arrays decoded from them, are compared with the
reference, written out here as the codec had it before, for every dtype the codec supports and for
layouts an array may have (transposed, strided, Fortran order, 0-d, empty).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.backends.tfserving.codec import from_tensor_proto, to_tensor_proto
from gateway.backends.tfserving.protos import serving_pb2 as pb
from gateway.backends.tfserving.protos import tensorflow_pb2 as tf_pb2
from gateway.core.errors import BackendError, BadRequest

DTYPES: dict[str, tuple[Any, int]] = {
    "float32": (np.float32, tf_pb2.DT_FLOAT),
    "float64": (np.float64, tf_pb2.DT_DOUBLE),
    "float16": (np.float16, tf_pb2.DT_HALF),
    "int8": (np.int8, tf_pb2.DT_INT8),
    "int16": (np.int16, tf_pb2.DT_INT16),
    "int32": (np.int32, tf_pb2.DT_INT32),
    "int64": (np.int64, tf_pb2.DT_INT64),
    "uint8": (np.uint8, tf_pb2.DT_UINT8),
    "uint16": (np.uint16, tf_pb2.DT_UINT16),
    "uint32": (np.uint32, tf_pb2.DT_UINT32),
    "uint64": (np.uint64, tf_pb2.DT_UINT64),
    "bool": (np.bool_, tf_pb2.DT_BOOL),
}


def layouts(dtype: Any) -> dict[str, np.ndarray]:
    """Arrays of ``dtype`` in the layouts a decoded request may have."""
    values = np.arange(-12, 12) if np.dtype(dtype).kind in "fi" else np.arange(24)
    base = (values % 2 == 0) if dtype is np.bool_ else values.astype(dtype)
    grid = base.reshape(4, 6)
    return {
        "row": grid[:1].copy(),
        "2-d": grid,
        "transposed": grid.T,
        "strided": grid[::2, ::3],
        "fortran": np.asfortranarray(grid),
        "3-d": base.reshape(2, 3, 4),
        "0-d": np.asarray(base[5]),
        "empty": base[:0].reshape(0, 3),
    }


def reference_tensor(array: np.ndarray, dtype: int) -> tf_pb2.TensorProto:
    """The TensorProto as the codec built it before (one dim added at a time, explicit byte order)."""
    proto = tf_pb2.TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.dtype = dtype  # type: ignore[assignment]
    proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return proto


def reference_request(inputs: dict[str, tf_pb2.TensorProto]) -> bytes:
    req = pb.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.version.value = 3
    for name, tensor in inputs.items():
        req.inputs[name].CopyFrom(tensor)
    return req.SerializeToString()


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_request_bytes_equal_the_reference_for_every_dtype_and_layout(name: str) -> None:
    dtype, tf_dtype = DTYPES[name]
    for layout, array in layouts(dtype).items():
        req = pb.PredictRequest()
        req.model_spec.name = "m"
        req.model_spec.version.value = 3
        to_tensor_proto(array, req.inputs["x"])
        expected = reference_request({"x": reference_tensor(array, tf_dtype)})
        assert req.SerializeToString() == expected, layout
        assert to_tensor_proto(array).SerializeToString() == reference_tensor(array, tf_dtype).SerializeToString()


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_decoded_tensors_equal_the_reference_for_every_dtype_and_layout(name: str) -> None:
    dtype, tf_dtype = DTYPES[name]
    for layout, array in layouts(dtype).items():
        wire = pb.PredictResponse.FromString(
            pb.PredictResponse(outputs={"y": reference_tensor(array, tf_dtype)}).SerializeToString()
        ).outputs["y"]
        decoded = from_tensor_proto(wire)
        content = wire.tensor_content
        if content:
            reference = np.frombuffer(content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)
        else:  # no values: the typed fields are read, and they are empty too
            reference = np.asarray([], dtype=dtype)
        reference = reference.reshape(array.shape)
        assert decoded.dtype == np.dtype(dtype), layout
        assert decoded.shape == array.shape, layout
        assert decoded.tobytes() == reference.tobytes() == array.tobytes(), layout


def test_strings_and_errors_are_unchanged() -> None:
    strings = np.array([["a", "bc"], ["", "d"]], dtype=object)
    proto = to_tensor_proto(strings)
    assert proto.dtype == tf_pb2.DT_STRING
    assert list(proto.string_val) == [b"a", b"bc", b"", b"d"]
    assert from_tensor_proto(proto).tolist() == [[b"a", b"bc"], [b"", b"d"]]
    with pytest.raises(BadRequest, match="tensor dtype complex64 has no TF Serving equivalent"):
        to_tensor_proto(np.zeros(2, dtype=np.complex64))
    with pytest.raises(BadRequest, match="tensor dtype >f4 has no TF Serving equivalent"):
        to_tensor_proto(np.zeros(2, dtype=">f4"))
    short = reference_tensor(np.zeros((2, 3), np.float32), tf_pb2.DT_FLOAT)
    short.tensor_content = short.tensor_content[:-4]
    with pytest.raises(BackendError, match=r"tensor_content has 20 bytes; shape \[2, 3\] of float32 needs 24"):
        from_tensor_proto(short)
