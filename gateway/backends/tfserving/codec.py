"""numpy arrays <-> TensorProto, without TensorFlow.

Numeric tensors travel in the packed ``tensor_content`` field (row-major, little-endian), which is
what TensorFlow itself writes and the cheapest to build. When decoding, the typed ``*_val`` fields
are read too, including TensorFlow's shorthand of one value repeated to fill the shape.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from gateway.backends.tfserving.protos import tensorflow_pb2 as tf_pb2
from gateway.core.errors import BackendError, BadRequest, GatewayError

# numpy dtype <-> TF DataType, and the typed field each dtype uses when tensor_content is empty.
_TO_TF: dict[np.dtype[Any], tf_pb2.DataType] = {
    np.dtype(np.float32): tf_pb2.DT_FLOAT,
    np.dtype(np.float64): tf_pb2.DT_DOUBLE,
    np.dtype(np.float16): tf_pb2.DT_HALF,
    np.dtype(np.int8): tf_pb2.DT_INT8,
    np.dtype(np.int16): tf_pb2.DT_INT16,
    np.dtype(np.int32): tf_pb2.DT_INT32,
    np.dtype(np.int64): tf_pb2.DT_INT64,
    np.dtype(np.uint8): tf_pb2.DT_UINT8,
    np.dtype(np.uint16): tf_pb2.DT_UINT16,
    np.dtype(np.uint32): tf_pb2.DT_UINT32,
    np.dtype(np.uint64): tf_pb2.DT_UINT64,
    np.dtype(np.bool_): tf_pb2.DT_BOOL,
}
_FROM_TF: dict[tf_pb2.DataType, np.dtype[Any]] = {v: k for k, v in _TO_TF.items()}
#: The dtypes above are native: on a little-endian host an array's own bytes are ``tensor_content``.
_NATIVE_IS_LITTLE = sys.byteorder == "little"
_VAL_FIELD: dict[int, str] = {
    tf_pb2.DT_FLOAT: "float_val",
    tf_pb2.DT_DOUBLE: "double_val",
    tf_pb2.DT_HALF: "half_val",
    tf_pb2.DT_INT8: "int_val",
    tf_pb2.DT_INT16: "int_val",
    tf_pb2.DT_INT32: "int_val",
    tf_pb2.DT_UINT8: "int_val",
    tf_pb2.DT_UINT16: "int_val",
    tf_pb2.DT_INT64: "int64_val",
    tf_pb2.DT_UINT32: "uint32_val",
    tf_pb2.DT_UINT64: "uint64_val",
    tf_pb2.DT_BOOL: "bool_val",
}
#: TF DataType -> Open Inference Protocol datatype name.
TF_TO_DATATYPE: dict[int, str] = {
    tf_pb2.DT_FLOAT: "FP32",
    tf_pb2.DT_DOUBLE: "FP64",
    tf_pb2.DT_HALF: "FP16",
    tf_pb2.DT_INT8: "INT8",
    tf_pb2.DT_INT16: "INT16",
    tf_pb2.DT_INT32: "INT32",
    tf_pb2.DT_INT64: "INT64",
    tf_pb2.DT_UINT8: "UINT8",
    tf_pb2.DT_UINT16: "UINT16",
    tf_pb2.DT_UINT32: "UINT32",
    tf_pb2.DT_UINT64: "UINT64",
    tf_pb2.DT_BOOL: "BOOL",
    tf_pb2.DT_STRING: "BYTES",
}
#: Open Inference Protocol datatype name -> TF DataType enum name (``FP32`` -> ``DT_FLOAT``), as
#: TF Serving's REST metadata writes it; derived from the table above, never copied.
DATATYPE_TO_TF_NAME: dict[str, str] = {name: tf_pb2.DataType.Name(tf) for tf, name in TF_TO_DATATYPE.items()}


def tf_dtype_name(datatype: str) -> str:
    """The TF DataType enum name of an OIP datatype (``FP32`` -> ``DT_FLOAT``), ``DT_INVALID`` if none."""
    return DATATYPE_TO_TF_NAME.get(datatype, "DT_INVALID")


def to_tensor_proto(array: np.ndarray, proto: tf_pb2.TensorProto | None = None) -> tf_pb2.TensorProto:
    """Fill (or make) a TensorProto from an array: numbers packed, bytes as ``string_val``."""
    proto = tf_pb2.TensorProto() if proto is None else proto
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    if array.dtype.kind in "OSU":
        proto.dtype = tf_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist())
        return proto
    dtype = _TO_TF.get(array.dtype)
    if dtype is None:
        raise BadRequest(f"tensor dtype {array.dtype} has no TF Serving equivalent")
    proto.dtype = dtype
    if _NATIVE_IS_LITTLE:
        proto.tensor_content = array.tobytes()  # row-major whatever the array's own layout
    else:
        proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return proto


def from_tensor_proto(
    proto: tf_pb2.TensorProto,
    *,
    what: str = "TF Serving tensor",
    fault: type[GatewayError] = BackendError,
    max_elements: int | None = None,
) -> np.ndarray:
    """An array from a TensorProto, from ``tensor_content`` or the typed value fields.

    A malformed tensor (negative dimensions, content that does not fill the shape, typed values out
    of the dtype's range) is the backend's fault: it becomes a BackendError (502), never a 500.
    A tensor a client sent (the gRPC front door) passes ``fault=BadRequest`` and ``what`` naming it.
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise fault(f"{what} has an unknown or negative dimension in shape {list(shape)}")
    count = math.prod(shape)  # exact: no int64 overflow for a hostile shape
    limit = _MAX_ELEMENTS if max_elements is None else max_elements
    if count > limit:
        raise fault(f"{what} of shape {list(shape)} has more than {limit} elements")
    if proto.dtype == tf_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
        return _fill(values, shape, count, what, fault)
    dtype = _FROM_TF.get(proto.dtype)
    if dtype is None:
        if fault is BackendError:
            raise BackendError(f"TF Serving answered with unsupported dtype {proto.dtype}")
        name = tf_pb2.DataType.Name(proto.dtype) if proto.dtype in tf_pb2.DataType.values() else proto.dtype
        raise fault(f"{what}: unsupported dtype {name}")
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise fault(
                f"{what.removesuffix(' tensor')} tensor_content has {len(content)} bytes; shape {list(shape)} of "
                f"{dtype.name} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
    raw = getattr(proto, _VAL_FIELD[proto.dtype])
    if proto.dtype == tf_pb2.DT_HALF:
        values = np.asarray(raw, dtype=np.uint16).view(np.float16)
    elif dtype.kind in "iu" and raw:
        wide = np.asarray(raw, dtype=np.uint64 if proto.dtype == tf_pb2.DT_UINT64 else np.int64)
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise fault(f"{what} of {dtype.name} holds values outside [{info.min}, {info.max}]")
        values = wide.astype(dtype)
    else:
        values = np.asarray(raw, dtype=dtype)
    return _fill(values, shape, count, what, fault)


#: A bound on the elements of one decoded tensor (a backend's shorthand of one repeated value could
#: otherwise ask for any amount of memory).
_MAX_ELEMENTS = 1 << 28


def _fill(values: np.ndarray, shape: tuple[int, ...], count: int, what: str, fault: type[GatewayError]) -> np.ndarray:
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:  # TensorFlow writes a constant tensor as its one repeated value
        return np.full(shape, values[0], dtype=values.dtype)
    if values.size == 0 and count == 0:
        return values.reshape(shape)
    raise fault(f"{what} has {values.size} values for shape {list(shape)}")
