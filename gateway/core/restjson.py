"""TF Serving's REST JSON forms, decoded to arrays and encoded from them.

Row form: ``{"instances": [row, ...]}``, answered by ``{"predictions": [...]}``.
Column form: ``{"inputs": value | {name: value}}``, answered by ``{"outputs": value | {...}}``.
A single-input (single-output) signature takes (gives) the bare value; several use names.
The same forms are the contract of the example TorchServe handler, so one body fits both stacks.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from gateway.core import jsonbody
from gateway.core.errors import BackendError, BadRequest
from gateway.core.jsonbody import DEFAULT_MAX_DEPTH, JsonLimit
from gateway.core.tensors import Signature, TensorSpec, check_shape, to_array, to_json_value
from gateway.core.types import Form, InferenceResult

_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY

# JSON Schemas of these forms, for the OpenAPI description of the routes that read them (the routes
# read raw bodies; nothing validates against these). A tensor value is a scalar or nested lists;
# the schema spells out three levels and leaves deeper ones open.
_B64_VALUE: dict[str, Any] = {
    "type": "object",
    "required": ["b64"],
    "additionalProperties": False,
    "properties": {"b64": {"type": "string", "description": "a binary value, base64-encoded"}},
}
_SCALAR: dict[str, Any] = {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}, _B64_VALUE]}


def _nested_lists(levels: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    for _ in range(levels):
        inner = {"anyOf": [_SCALAR, {"type": "array", "items": inner}]}
    return inner


#: A tensor as JSON: numbers, booleans, strings or ``{"b64": ...}``, or nested lists of them (row-major).
TENSOR_VALUE_SCHEMA = _nested_lists(3)
_NAMED_VALUES: dict[str, Any] = {"type": "object", "additionalProperties": TENSOR_VALUE_SCHEMA}
#: A TF Serving REST predict body, row form or column form.
PREDICT_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "signature_name": {"type": "string", "default": "serving_default"},
        "instances": {
            "type": "array",
            "minItems": 1,
            "description": "row form: one entry per example, a value (one-input models) or an object of named inputs",
            "items": {"anyOf": [TENSOR_VALUE_SCHEMA, _NAMED_VALUES]},
        },
        "inputs": {
            "description": "column form: a value (one-input models) or an object of named inputs",
            "anyOf": [TENSOR_VALUE_SCHEMA, _NAMED_VALUES],
        },
    },
    "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
}
#: Example bodies for a model with one input ``x``, float32 ``[batch, 4]`` (the example ``mlp``).
PREDICT_BODY_EXAMPLES: dict[str, Any] = {
    "row": {"summary": "row form", "value": {"instances": [[0.1, 0.2, 0.3, 0.4]]}},
    "column": {
        "summary": "column form, named inputs",
        "value": {"signature_name": "serving_default", "inputs": {"x": [[0.1, 0.2, 0.3, 0.4]]}},
    },
}


def dumps(payload: Any, *, finite: bool = True) -> bytes:
    """JSON by orjson (numpy arrays included); with non-finite floats, the ``NaN``/``Infinity``
    tokens TF Serving writes (orjson would write ``null`` and lose what the model answered)."""
    if finite:
        return orjson.dumps(payload, option=_ORJSON_OPTS)
    return json.dumps(payload, allow_nan=True, separators=(",", ":"), default=_plain).encode()


def all_finite(arrays: Any) -> bool:
    """Whether every floating-point array among ``arrays`` holds finite numbers only."""
    return all(bool(np.isfinite(a).all()) for a in arrays if a.dtype.kind == "f")


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return to_json_value(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def parse_json(body: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[Any, bool]:
    """Parse a request body in one pass, TF Serving's ``NaN``, ``Infinity`` and ``-Infinity``
    tokens included (its documented JSON conformance), and whether it may hold a JSON
    ``true``/``false`` (False: it holds none, which spares the decoders their search for booleans
    among numbers); a 400 that says where the JSON is broken, or which limit it is over."""
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return jsonbody.parse(body, max_depth=max_depth)
    except JsonLimit as exc:
        raise BadRequest(f"request body refused: {exc}") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def decode_predict_body(
    body: bytes, signature: Signature, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[dict[str, np.ndarray], Form]:
    """Parse and decode a TF Serving REST predict request body (400s name what is wrong)."""
    payload, bools = parse_json(body, max_depth)
    return decode_request(payload, signature, bools=bools)


def decode_request(payload: Any, signature: Signature, *, bools: bool = True) -> tuple[dict[str, np.ndarray], Form]:
    """Decode a TF Serving REST predict body into arrays checked against ``signature``.

    ``bools=False`` says the body has no JSON ``true``/``false`` (``parse_json``), which spares
    numeric inputs the scan for booleans that numpy would otherwise take for 0 and 1.
    """
    if not isinstance(payload, dict) or ("instances" in payload) == ("inputs" in payload):
        raise BadRequest(
            "body must be a JSON object with exactly one of 'instances' (row form) or 'inputs' (column form)"
        )
    sig_name = payload.get("signature_name", "serving_default")
    if not isinstance(sig_name, str):
        raise BadRequest("'signature_name' must be a string")
    if "instances" in payload:
        return _decode_rows(payload["instances"], signature, bools), "row"
    return _decode_columns(payload["inputs"], signature, bools), "column"


def _decode_rows(rows: Any, signature: Signature, bools: bool) -> dict[str, np.ndarray]:
    if not isinstance(rows, list) or not rows:
        raise BadRequest("'instances' must be a non-empty list of rows")
    specs = signature.inputs
    named = all(isinstance(r, dict) and "b64" not in r for r in rows)
    if len(specs) == 1 and not named:
        return {specs[0].name: _convert(specs[0], rows, bools)}
    if not named:
        raise BadRequest(
            "'instances': with several inputs each row must be an object of named inputs "
            f"({', '.join(s.name for s in specs)})"
        )
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        for name in row:
            signature.input(name)
        for spec in specs:
            if spec.name not in row:
                raise BadRequest(f"'instances'[{i}]: missing input '{spec.name}'")
            columns.setdefault(spec.name, []).append(row[spec.name])
    return {spec.name: _convert(spec, columns[spec.name], bools) for spec in specs}


def _decode_columns(value: Any, signature: Signature, bools: bool) -> dict[str, np.ndarray]:
    specs = signature.inputs
    if isinstance(value, dict) and "b64" not in value:
        for name in value:
            signature.input(name)
        missing = [s.name for s in specs if s.name not in value]
        if missing:
            raise BadRequest(f"missing input '{missing[0]}' in 'inputs'")
        return {spec.name: _convert(spec, value[spec.name], bools) for spec in specs}
    if len(specs) != 1:
        raise BadRequest(
            f"'inputs' must be an object of named inputs ({', '.join(s.name for s in specs)}) for this model"
        )
    return {specs[0].name: _convert(specs[0], value, bools)}


def _convert(spec: TensorSpec, value: Any, bools: bool) -> np.ndarray:
    array = to_array(spec.name, value, spec.datatype, bools=bools)
    check_shape(spec, array)
    return array


def encode_inputs_column(inputs: dict[str, np.ndarray]) -> bytes:
    """Arrays as a column-form request body, with names (unambiguous for any signature)."""
    return orjson.dumps({"inputs": {name: _jsonable(a) for name, a in inputs.items()}}, option=_ORJSON_OPTS)


def encode_outputs(outputs: dict[str, np.ndarray], form: Form) -> bytes:
    """Output arrays as a TF Serving REST predict answer in ``form``."""
    finite = all_finite(outputs.values())
    if form == "column":
        if len(outputs) == 1:
            (only,) = outputs.values()
            return dumps({"outputs": _jsonable(only)}, finite=finite)
        return dumps({"outputs": {n: _jsonable(a) for n, a in outputs.items()}}, finite=finite)
    if len(outputs) == 1:
        (only,) = outputs.values()
        return dumps({"predictions": _jsonable(only)}, finite=finite)
    for name, array in outputs.items():
        if array.ndim == 0:
            raise BadRequest(
                f"output '{name}' has no batch dimension, which the row form ('instances') needs; "
                "use the column form ('inputs')"
            )
    batch = min(a.shape[0] for a in outputs.values()) if outputs else 0
    rows = [{n: _jsonable(a[i, ...]) for n, a in outputs.items()} for i in range(batch)]
    return dumps({"predictions": rows}, finite=finite)


def decode_outputs(body: bytes, form: Form, signature: Signature | None) -> dict[str, np.ndarray]:
    """Parse a backend's TF Serving REST answer back into output arrays."""
    try:
        payload = jsonbody.loads(body)
    except ValueError as exc:
        raise BackendError(f"backend answered with invalid JSON: {exc}") from None
    key = "predictions" if form == "row" else "outputs"
    if not isinstance(payload, dict) or key not in payload:
        raise BackendError(f"backend answer has no '{key}' field")
    value = payload[key]
    specs = signature.outputs if signature else ()
    names = [s.name for s in specs] or ["output_0"]
    types = {s.name: s.datatype for s in specs}
    if form == "row" and isinstance(value, list) and value and _named(value[0]):
        value = _row_columns(value, key)
    if not _named(value):
        value = {names[0]: value}
    out: dict[str, np.ndarray] = {}
    for name, v in value.items():
        datatype = types.get(name)
        try:
            out[name] = to_array(name, v, datatype, role="output") if datatype else _untyped(name, v)
        except BadRequest as exc:
            raise BackendError(f"backend {exc.message}") from None
    return out


def _named(value: Any) -> bool:
    """An object of named tensors (as opposed to a ``{"b64": ...}`` value)."""
    return isinstance(value, dict) and "b64" not in value


def _row_columns(rows: list[Any], key: str) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {name: [] for name in rows[0]}
    for i, row in enumerate(rows):
        if not _named(row):
            raise BackendError(f"backend answer: '{key}'[{i}] is not an object of named outputs")
        for name, column in columns.items():
            if name not in row:
                raise BackendError(f"backend answer: '{key}'[{i}] has no output '{name}'")
            column.append(row[name])
    return columns


def _untyped(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except ValueError:
        raise BadRequest(f"output '{name}': values are not a rectangular tensor") from None


def _jsonable(array: np.ndarray) -> Any:
    # orjson writes numeric arrays natively (fast); BYTES need strings or {"b64"}, and a 0-d array
    # (which orjson refuses, and ascontiguousarray would make 1-d) is a plain JSON value.
    if array.dtype.kind in "OSU" or array.ndim == 0:
        return to_json_value(array)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


def result_body(result: InferenceResult, form: Form, signature: Signature | None) -> bytes:
    """A backend answer as a TF Serving REST body in ``form``; passed through when it already is."""
    if result.body is not None and result.form == form:
        return result.body
    return encode_outputs(result.outputs(signature), form)
