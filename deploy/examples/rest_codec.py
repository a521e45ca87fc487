"""TF Serving's REST bodies, read and written against a ``signature.json``, for the TorchServe handler.

Packaged into the archive next to ``torchserve_handler.py`` (``--extra-files``), so it obeys the
same limits: Python 3.8 syntax and standard library, numpy only (no torch), checked with vermin.

Request (JSON, as TF Serving's REST API):

- Row form ``{"instances": [row, ...]}``: one row per example. For a single-input model a row is
  that input's value (nested lists); a row may also be an object ``{"x": value}`` (required when
  the model has several inputs).
- Column form ``{"inputs": value}`` (single input) or ``{"inputs": {"x": value}}``; values include
  the batch dimension.
- Optional ``"signature_name"``: only ``"serving_default"`` exists.

Response: row form -> ``{"predictions": [...]}``, one entry per row (an object ``{name: value}``
per row when the model has several outputs); column form -> ``{"outputs": value}`` (single output)
or ``{"outputs": {name: value}}``. A bad request raises ``ValueError`` with a message naming the
field, what was expected and what was received, e.g. ``input 'x': expected shape [-1, 4], got [2, 5]``.
"""

import json
from typing import Any, Dict, List, Tuple

import numpy as np

SIGNATURE_FILE = "signature.json"
SIGNATURE_NAME = "serving_default"

# Open Inference Protocol datatype -> (numpy dtype, numpy dtype kinds accepted from JSON).
DATATYPES = {
    "FP16": (np.float16, "biuf"),
    "FP32": (np.float32, "biuf"),
    "FP64": (np.float64, "biuf"),
    "INT8": (np.int8, "biu"),
    "INT16": (np.int16, "biu"),
    "INT32": (np.int32, "biu"),
    "INT64": (np.int64, "biu"),
    "UINT8": (np.uint8, "biu"),
    "BOOL": (np.bool_, "b"),
}

_BAD_BODY = "body must be a JSON object with 'instances' or 'inputs'"

Spec = Dict[str, Any]
Arrays = Dict[str, np.ndarray]


def validate_signature(signature: Any) -> Tuple[List[Spec], List[Spec]]:
    """The input and output specs of a ``signature.json``; a clear RuntimeError when malformed."""

    def valid_input(spec: Any) -> bool:
        shape = spec.get("shape")
        return (
            isinstance(spec.get("name"), str)
            and spec.get("datatype") in DATATYPES
            and isinstance(shape, list)
            and len(shape) > 0
            and all(isinstance(d, int) for d in shape)
        )

    try:
        inputs, outputs = list(signature["inputs"]), list(signature["outputs"])
        ok = (
            bool(inputs)
            and bool(outputs)
            and all(valid_input(spec) for spec in inputs)
            and all(isinstance(spec.get("name"), str) for spec in outputs)
        )
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise RuntimeError(
            f"invalid {SIGNATURE_FILE}: expected inputs with name, datatype (one of "
            f"{sorted(DATATYPES)}) and shape, and outputs with a name; got {signature!r}"
        )
    return inputs, outputs


def request_body(request: Dict[str, Any]) -> Dict[str, Any]:
    """The decoded JSON body of one TorchServe request."""
    # TorchServe puts a raw body under "body" (or "data"), already JSON-decoded when the
    # request's Content-Type is application/json, otherwise as bytes.
    body = request.get("body")
    if body is None:
        body = request.get("data")
    if body is None:
        # TorchServe parses a form-encoded body (what `curl -d` sends by default) into form
        # fields, mangling or dropping the JSON: nothing is left to parse.
        raise ValueError(f"{_BAD_BODY}, got no body (send it with Content-Type: application/json)")
    if isinstance(body, (bytes, bytearray)):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{_BAD_BODY}, got non-UTF-8 bytes") from None
    if isinstance(body, str):
        if not body.strip():
            raise ValueError(f"{_BAD_BODY}, got an empty body")
        try:
            body = json.loads(body)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{_BAD_BODY}, got {_describe(body)}")
    return body


def parse(body: Dict[str, Any], inputs: List[Spec]) -> Tuple[str, Arrays]:
    """Validate one request body; return its form ("row"/"column") and its input arrays."""
    signature_name = body.get("signature_name", SIGNATURE_NAME)
    if signature_name != SIGNATURE_NAME:
        raise ValueError(f"signature_name: expected {SIGNATURE_NAME!r}, got {signature_name!r}")
    if "instances" in body and "inputs" in body:
        raise ValueError("body must have either 'instances' or 'inputs', got both")
    if "instances" in body:
        return "row", _parse_rows(body["instances"], inputs)
    if "inputs" in body:
        return "column", _parse_columns(body["inputs"], inputs)
    raise ValueError(f"{_BAD_BODY}, got keys {sorted(body)}")


def format_outputs(form: str, outputs: Arrays, specs: List[Spec]) -> Dict[str, Any]:
    """The answer to a request of ``form``: ``{"predictions": ...}`` or ``{"outputs": ...}``."""
    key = "predictions" if form == "row" else "outputs"
    if len(specs) == 1:
        return {key: outputs[specs[0]["name"]].tolist()}
    if form == "column":
        return {key: {name: value.tolist() for name, value in outputs.items()}}
    n = len(next(iter(outputs.values())))
    return {key: [{name: value[i].tolist() for name, value in outputs.items()} for i in range(n)]}


def _parse_rows(instances: Any, inputs: List[Spec]) -> Arrays:
    if not isinstance(instances, list) or not instances:
        raise ValueError(f"'instances' must be a non-empty list of rows, got {_describe(instances)}")
    names = [spec["name"] for spec in inputs]
    columns: Dict[str, List[Any]] = {name: [] for name in names}
    for i, row in enumerate(instances):
        if isinstance(row, dict):
            _check_names(row, names, where=f"instances[{i}]: ")
            for name in names:
                columns[name].append(row[name])
        elif len(names) == 1:
            columns[names[0]].append(row)
        else:
            raise ValueError(
                f"instances[{i}]: the model has inputs {names}, so each row must be an "
                f"object keyed by input name, got {_describe(row)}"
            )
    return {spec["name"]: _to_array(spec, columns[spec["name"]]) for spec in inputs}


def _parse_columns(given: Any, inputs: List[Spec]) -> Arrays:
    names = [spec["name"] for spec in inputs]
    if isinstance(given, dict):
        _check_names(given, names, where="")
        values = given
    elif len(names) == 1:
        values = {names[0]: given}
    else:
        raise ValueError(f"'inputs' must be an object keyed by input name {names}, got {_describe(given)}")
    arrays = {spec["name"]: _to_array(spec, values[spec["name"]]) for spec in inputs}
    batch_sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(batch_sizes.values())) > 1:
        raise ValueError(f"inputs must have the same batch size, got {batch_sizes}")
    return arrays


def _check_names(given: Dict[str, Any], names: List[str], where: str) -> None:
    for name in names:
        if name not in given:
            raise ValueError(f"{where}missing input {name!r}")
    for name in given:
        if name not in names:
            raise ValueError(f"{where}unknown input {name!r}, expected inputs {names}")


def _to_array(spec: Spec, value: Any) -> np.ndarray:
    """Convert one input's JSON value (batch dim included) to an array checked against spec."""
    name, datatype, shape = spec["name"], spec["datatype"], spec["shape"]
    dtype, kinds = DATATYPES[datatype]
    try:
        raw = np.asarray(value)
    except ValueError:
        raise ValueError(f"input {name!r}: expected shape {shape}, got a ragged nested list") from None
    if raw.dtype.kind not in kinds:
        got = "strings" if raw.dtype.kind == "U" else f"{raw.dtype} values"
        if raw.dtype.kind == "O":
            got = "non-numeric values (null, objects or mixed types)"
        raise ValueError(f"input {name!r}: expected {datatype} numbers, got {got}")
    got_shape = list(raw.shape)
    # Lengths compared first: zip() without strict= (Python 3.10) stops at the shorter one.
    if len(got_shape) != len(shape) or any(want not in (-1, got) for want, got in zip(shape, got_shape)):
        raise ValueError(f"input {name!r}: expected shape {shape}, got {got_shape}")
    if got_shape[0] == 0:
        raise ValueError(f"input {name!r}: expected at least one example, got shape {got_shape}")
    return np.ascontiguousarray(raw, dtype=dtype)


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    if isinstance(value, list):
        return "an empty list" if not value else f"a list of {len(value)}"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"
