"""Tensors as the gateway sees them: named numpy arrays, their datatypes, and their signatures.

The protocol layer decodes JSON into ``dict[str, np.ndarray]`` checked against a version's
signature; backend adapters turn those arrays into their own wire format. Datatype names are the
Open Inference Protocol's (``FP32``, ``INT64``, ``BYTES``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.core.errors import BadRequest

#: Open Inference Protocol datatype -> numpy dtype. BYTES arrays are object arrays of ``bytes``.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_NUMPY = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """The Open Inference Protocol datatype name of a numpy array."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_NUMPY[array.dtype]
    except KeyError:
        raise BadRequest(f"unsupported tensor dtype {array.dtype}") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a signature; ``-1`` in ``shape`` accepts any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    """The inputs and outputs of one model version."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        def specs(key: str) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"]))
                for t in data.get(key, [])
            )

        return cls(specs("inputs"), specs("outputs"))

    @classmethod
    def load(cls, path: Path) -> Signature | None:
        """Read a ``signature.json``; ``None`` when the version has none."""
        if not path.is_file():
            return None
        return cls.from_json(json.loads(path.read_text()))

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        expected = ", ".join(s.name for s in self.inputs)
        raise BadRequest(f"unknown input '{name}' (expected inputs: {expected})")


def _shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_shape(spec: TensorSpec, array: np.ndarray) -> None:
    """Raise BadRequest unless ``array``'s shape fits ``spec`` (``-1`` matches any size)."""
    if len(spec.shape) != array.ndim or any(
        want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
    ):
        raise BadRequest(
            f"input '{spec.name}': expected shape {_shape_text(spec.shape)}, got {_shape_text(list(array.shape))}"
        )


#: numpy's limit on the number of dimensions; deeper JSON nesting is refused before recursing.
_MAX_DIMS = 64


def _b64_to_bytes(where: str, value: Any, depth: int = 0) -> Any:
    import base64

    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise BadRequest(f"{where}: 'b64' value is not valid base64") from None
        raise BadRequest(f'{where}: a tensor value object must be {{"b64": "<base64 string>"}}')
    if isinstance(value, list):
        if depth >= _MAX_DIMS:
            raise BadRequest(f"{where}: values are nested deeper than {_MAX_DIMS} dimensions")
        return [_b64_to_bytes(where, v, depth + 1) for v in value]
    if isinstance(value, str):
        return value.encode()
    return value


def to_array(name: str, value: Any, datatype: str, *, role: str = "input", bools: bool = True) -> np.ndarray:
    """Convert a JSON value (nested lists) into an array of ``datatype``, exactly.

    Numbers are never silently truncated or wrapped: a float for an integer input, a number out of
    the type's range, a string or a boolean for a number is a BadRequest naming the input (or, with
    ``role="output"``, the output). ``bools=False`` promises that ``value`` holds no boolean (the
    body had no ``true``/``false``), which skips the scan for them.
    """
    dtype = DATATYPES[datatype]
    if dtype.kind == "f":
        small = _small_floats(value, dtype)
        if small is not None:
            return small
    where = f"{role} '{name}'"
    if datatype == "BYTES":
        return _bytes_array(where, value)
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise BadRequest(f"{where}: {_ragged(exc)}") from None
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(dtype)
    if kind in "fiu" and dtype.kind != "b" and bools and _holds_bool(value):
        raise BadRequest(f"{where}: expected {datatype} values, got booleans among the numbers")
    if dtype.kind == "f":
        ok = kind in "fiu"
    elif dtype.kind in "iu":
        # numpy makes float64 (or objects) of integers beyond int64, alone or mixed with negative ones
        ints = array if kind in "iu" else _exact_ints(value)
        ok = ints is not None
        if ints is not None:
            info = np.iinfo(dtype)
            if int(ints.min()) < info.min or int(ints.max()) > info.max:
                raise BadRequest(f"{where}: value out of range for {datatype} [{info.min}, {info.max}]")
            array = ints
    else:  # bool
        ok = kind == "b"
    if not ok:
        raise BadRequest(f"{where}: expected {datatype} values, got {_kind_text(array)}")
    if dtype.kind != "f" or array.dtype == dtype:
        return array.astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        narrowed = array.astype(dtype)
    if not np.isfinite(narrowed).all() and (np.isinf(narrowed) & np.isfinite(array)).any():
        finfo = np.finfo(dtype)
        raise BadRequest(f"{where}: value out of range for {datatype} [{float(finfo.min)}, {float(finfo.max)}]")
    return narrowed


#: Above this many numbers, numpy's own conversion of nested lists beats a scan in Python.
_SMALL = 64
#: Integers up to 2**53 in magnitude are exact as doubles: converting them through a double (as
#: numpy does for a Python int into a float dtype) gives what int64 -> float gives.
_EXACT_INT = 2**53
_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}
_INT_MAX = {dtype: min(limit, _EXACT_INT) for dtype, limit in _FLOAT_MAX.items()}


def _small_floats(value: Any, dtype: np.dtype[Any]) -> np.ndarray | None:
    """``value`` as an array of the float ``dtype`` when it is a small list, or list of equal rows,
    of finite Python floats within the dtype's range and exactly representable ints (no booleans):
    then the general path's checks cannot fail and its array would be this one. None for anything
    else (errors included), which the general path decides; a request to a small tabular model
    (one row of a few features) is this case, at a fraction of the general path's cost."""
    if type(value) is not list or not value:
        return None
    limit, int_limit = _FLOAT_MAX[dtype], _INT_MAX[dtype]
    rows = value if type(value[0]) is list else (value,)
    width = len(rows[0])
    if not width or len(rows) * width > _SMALL:
        return None
    for row in rows:
        if type(row) is not list or len(row) != width:
            return None
        for x in row:
            kind = type(x)
            if kind is float:
                if not -limit <= x <= limit:  # also false for NaN
                    return None
            elif kind is not int or not -int_limit <= x <= int_limit:
                return None
    return np.array(value, dtype=dtype)


def _holds_bool(value: Any) -> bool:
    """Whether nested lists hold a boolean (numpy would take it for 0 or 1 among numbers)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is bool:
            return True
        if type(item) is list:
            pending.extend(item)
    return False


def _exact_ints(value: Any) -> np.ndarray | None:
    """``value`` as an array of Python ints when it holds integers only (no booleans), else None."""
    exact = np.array(value, dtype=object)
    return exact if all(type(v) is int for v in exact.ravel()) else None


def _bytes_array(where: str, value: Any) -> np.ndarray:
    raw = _b64_to_bytes(where, value)
    try:
        array = np.array(raw, dtype=object)
    except ValueError as exc:
        raise BadRequest(f"{where}: {_ragged(exc)}") from None
    for v in array.ravel():  # not .flat, which stops at 32 dimensions
        if not isinstance(v, bytes):
            if isinstance(v, list):  # numpy keeps the rows of a ragged object array as lists
                raise BadRequest(f"{where}: values are not a rectangular tensor")
            raise BadRequest(f"{where}: expected BYTES values (strings or b64), got {_json_kind(v)}")
    return array


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "booleans"
    return "numbers"


def _kind_text(array: np.ndarray) -> str:
    if array.dtype.kind == "O" and any(v is None for v in array.ravel()):
        return "null (JSON has no NaN or infinity, which some writers put as null)"
    return {
        "f": "floating-point numbers",
        "i": "integers",
        "u": "integers",
        "b": "booleans",
        "U": "strings",
        "O": "mixed or nested values",
    }.get(array.dtype.kind, str(array.dtype))


def _ragged(exc: ValueError) -> str:
    return f"values are not a rectangular tensor ({str(exc).splitlines()[0]})"


def to_json_value(array: np.ndarray) -> Any:
    """An array as nested JSON lists; BYTES as UTF-8 strings, or ``{"b64"}`` when not UTF-8."""
    if array.dtype.kind not in "OSU":
        return array.tolist()
    return _bytes_to_json(array.tolist())


def _bytes_to_json(value: Any) -> Any:
    import base64

    if isinstance(value, list):
        return [_bytes_to_json(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value
