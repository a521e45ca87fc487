"""TensorProto <-> numpy conversion and TensorFlow data type names."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from .errors import invalid_argument

# TensorProto's typed repeated field per dtype, as Tensor::AsProtoField fills them.
_VALUE_FIELD: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}

# DataTypeString() spellings, used in TF Serving's JSON error messages.
_SHORT_NAMES: dict[int, str] = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_UINT16: "uint16",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_BFLOAT16: "bfloat16",
}


def dtype_name(dtype: int) -> str:
    """Return the DT_* enum name of a data type, e.g. DT_FLOAT."""
    try:
        return str(types_pb2.DataType.Name(dtype))
    except ValueError:
        return f"DataType({dtype})"


def dtype_short_name(dtype: int) -> str:
    """Return TensorFlow's DataTypeString() of a data type, e.g. float."""
    return _SHORT_NAMES.get(dtype, dtype_name(dtype))


def array_dtype(array: np.ndarray) -> int:
    """Return the DataType enum of a numpy array (object/bytes arrays are DT_STRING)."""
    if array.dtype.kind in "OSU":
        return int(types_pb2.DT_STRING)
    return int(tf.as_dtype(array.dtype).as_datatype_enum)


def shape_to_string(dims: list[int] | tuple[int, ...]) -> str:
    """Format a shape as [d0,d1,...] with ? for unknown dimensions."""
    return "[" + ",".join("?" if d < 0 else str(d) for d in dims) + "]"


def proto_shape(shape: tensor_shape_pb2.TensorShapeProto) -> list[int] | None:
    """Return the dimensions of a TensorShapeProto, or None if its rank is unknown."""
    if shape.unknown_rank:
        return None
    return [dim.size for dim in shape.dim]


def proto_to_array(name: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a request TensorProto; malformed ones are INVALID_ARGUMENT, as in TF Serving."""
    if proto.dtype == types_pb2.DT_INVALID:
        raise invalid_argument(f"tensor parsing error: {name}")
    try:
        array = tf.make_ndarray(proto)
    except Exception as exc:  # make_ndarray raises several exception types on bad protos
        raise invalid_argument(f"tensor parsing error: {name}") from exc
    return np.asarray(array)


def array_to_proto(array: Any) -> tensor_pb2.TensorProto:
    """Encode an output with the typed value fields (float_val, ...), as TF Serving does."""
    array = np.asarray(array)
    dtype = array_dtype(array)
    field = _VALUE_FIELD.get(dtype)
    if field is None:
        # Rare types (half, complex, ...) use TensorFlow's own encoding.
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    values = array.ravel().tolist()
    if dtype == types_pb2.DT_STRING:
        values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    getattr(proto, field).extend(values)
    return proto
