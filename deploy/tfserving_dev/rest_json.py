"""TF Serving's JSON tensor encoding (util/json_tensor.cc): row and columnar formats."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from .errors import ServingError, invalid_argument
from .tensors import array_dtype, dtype_short_name

ROW, COLUMNAR = "row", "columnar"
_INT_RANGES: dict[int, tuple[int, int]] = {
    types_pb2.DT_INT8: (-(2**7), 2**7 - 1),
    types_pb2.DT_UINT8: (0, 2**8 - 1),
    types_pb2.DT_INT16: (-(2**15), 2**15 - 1),
    types_pb2.DT_INT32: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT64: (-(2**63), 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_NUMPY_TYPES: dict[int, Any] = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_STRING: object,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
}


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    return "Array" if isinstance(value, list) else "Object"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_lossless(value: float, dtype: int) -> bool:
    """TF Serving's IsLosslessDecimal: integers must fit the mantissa, floats the range."""
    if isinstance(value, float) and not math.isfinite(value):
        return True
    if isinstance(value, int):
        return abs(value) <= (2**24 - 1 if dtype == types_pb2.DT_FLOAT else 2**53 - 1)
    return dtype != types_pb2.DT_FLOAT or abs(value) <= float(np.finfo(np.float32).max)


def _leaf(value: Any, dtype: int) -> Any:
    """Convert one JSON scalar to the signature's dtype, with TF Serving's messages."""
    type_error = invalid_argument(
        f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not of expected type: {dtype_short_name(dtype)}"
    )
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode()
        if _is_b64(value):
            text = value["b64"] + "=" * (-len(value["b64"]) % 4)  # absl accepts unpadded input
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise invalid_argument("Unable to base64 decode") from exc
        if isinstance(value, dict):
            raise invalid_argument(f"JSON Value: {_json_text(value)} not formatted correctly for base64 data")
        raise type_error
    if dtype == types_pb2.DT_BOOL:
        if isinstance(value, bool):
            return value
        raise type_error
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise type_error
        if not _is_lossless(value, dtype):
            raise invalid_argument(
                f"Cannot convert JSON value: {_json_text(value)} to {dtype_short_name(dtype)} "
                "without loss of precision."
            )
        return float(value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        raise type_error
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {_json_text(value)} to type: {dtype_short_name(dtype)}",
    )


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int], level: int, dtype: int, out: list[Any]) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(
                f"JSON Value: {_json_text(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {len(shape)}"
            )
        out.append(_leaf(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _flatten(item, shape, level + 1, dtype, out)


def _to_array(value: Any, dtype: int) -> np.ndarray:
    shape = _dense_shape(value)
    flat: list[Any] = []
    _flatten(value, shape, 0, dtype, flat)
    if dtype not in _NUMPY_TYPES:
        raise invalid_argument(f"Unsupported input type: {dtype_short_name(dtype)}")
    array = np.empty(len(flat), dtype=_NUMPY_TYPES[dtype])
    array[:] = flat
    return array.reshape(shape)


def _rows(instances: list[Any], infos: Mapping[str, Any]) -> dict[str, np.ndarray]:
    names = sorted(infos)
    as_objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not as_objects and len(names) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, item in enumerate(instances):
        item_is_object = isinstance(item, dict) and not _is_b64(item)
        if as_objects != item_is_object:
            kind = "object but got list" if as_objects else "value/list but got object"
            raise invalid_argument(f"Expecting {kind} at item {index} of input list")
        values = item if as_objects else {names[0]: item}
        for name, value in values.items():
            if name not in infos:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {name} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {name}"
                )
            try:
                array = _to_array(value, infos[name].dtype)
            except ServingError as exc:
                raise invalid_argument(f"Failed to process element: {index} of 'instances' list. Error: {exc}") from exc
            if columns[name] and columns[name][0].shape != array.shape:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: Expecting shape {list(columns[name][0].shape)} but got: "
                    f"{list(array.shape)}"
                )
            columns[name].append(array)
        if set(values) != set(names):
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_json_text(item)} must only have keys: {','.join(names)}"
            )
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def _columns(inputs: Any, infos: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = next(iter(infos))
        return {name: _to_array(inputs, infos[name].dtype)}
    result = {}
    for name in sorted(infos):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        result[name] = _to_array(inputs[name], infos[name].dtype)
    return result


def parse_predict_body(body: Any, infos: Mapping[str, meta_graph_pb2.TensorInfo]) -> tuple[dict[str, np.ndarray], str]:
    """Decode a predict request body into input arrays; returns them and the format."""
    if not infos:
        raise invalid_argument("Failed to get input map for signature")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {_json_text(body)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid_argument("Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument("No values in 'instances' array")
        return _rows(instances, infos), ROW
    if has_inputs:
        return _columns(body["inputs"], infos), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _values(array: np.ndarray, as_bytes: bool) -> Iterator[Any]:
    dtype = array_dtype(array)
    for value in array.ravel().tolist():
        if dtype == types_pb2.DT_STRING:
            raw = value if isinstance(value, bytes) else str(value).encode()
            yield ({"b64": base64.b64encode(raw).decode()} if as_bytes else raw.decode("utf-8", "replace"))
        elif dtype == types_pb2.DT_FLOAT:
            # Shortest text that round-trips the float32 (TF Serving writes 0.2, not 0.2000000029).
            yield float(str(np.float32(value)))
        else:
            yield value


def _nest(flat: Iterator[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return next(flat)
    return [_nest(flat, shape[1:]) for _ in range(shape[0])]


def _to_json(name: str, array: np.ndarray) -> Any:
    # Like TF Serving: string outputs whose alias ends in _bytes are base64 objects.
    return _nest(_values(array, name.endswith("_bytes")), array.shape)


def format_predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """Encode outputs as {"predictions": ...} (row) or {"outputs": ...} (columnar)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {"outputs": _to_json(names[0], outputs[names[0]])}
        return {"outputs": {name: _to_json(name, outputs[name]) for name in names}}
    batch = 0
    for name in names:
        shape = outputs[name].shape
        if not shape:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if shape[0] < 1:
            raise invalid_argument(f"Tensor name: {name} has invalid batch size: {shape[0]}")
        if batch and shape[0] != batch:
            raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}")
        batch = shape[0]
    # arr[i, ...] keeps the dtype; np.asarray(bytes) would make an 'S' array and drop trailing NULs.
    rows = {name: [_to_json(name, outputs[name][i, ...]) for i in range(batch)] for name in names}
    if len(names) == 1:
        return {"predictions": rows[names[0]]}
    return {"predictions": [{name: rows[name][i] for name in names} for i in range(batch)]}
