"""A generic TorchServe handler speaking TF Serving's REST body format.

Both serving stacks accept the same request body, so the gateway can pass bodies through
unchanged whichever backend serves a version.

Packaging (``torch-model-archiver``)
------------------------------------
- ``--serialized-file``: the model, either a ``torch.export`` program (``*.pt2``, written by
  ``torch.export.save``) or TorchScript (any other extension, ``torch.jit.save``). Its forward
  takes the inputs positionally in signature order and returns a tensor (one output), a
  tuple/list in signature order, or a dict keyed by output name.
- ``--extra-files signature.json``: the inputs and outputs, Open Inference Protocol style::

      {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
       "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]}

  The first dimension is the batch (``-1``); another ``-1`` means "any size".

Request (JSON, as TF Serving's REST API)
----------------------------------------
- Row form ``{"instances": [row, ...]}``: one row per example. For a single-input model a row
  is that input's value (nested lists); a row may also be an object ``{"x": value}`` (required
  when the model has several inputs).
- Column form ``{"inputs": value}`` (single input) or ``{"inputs": {"x": value}}``; values
  include the batch dimension.
- Optional ``"signature_name"``: only ``"serving_default"`` exists.
- Send it with ``Content-Type: application/json``: TorchServe parses a form-encoded body (what
  ``curl -d`` sends by default) into form fields, and the JSON is lost.

Response
--------
- Row form -> ``{"predictions": [...]}``, one entry per row: the output's value for that row,
  or an object ``{name: value}`` per row when the model has several outputs.
- Column form -> ``{"outputs": value}`` (single output) or ``{"outputs": {name: value}}``.
- A bad request -> HTTP 400 with ``{"error": "..."}`` naming the field, what was expected and
  what was received, e.g. ``input 'x': expected shape [-1, 4], got [2, 5]``.

TorchServe may batch several requests into one ``handle`` call: valid requests run through the
model together, and each request gets its own response, so one bad request fails only itself.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

SIGNATURE_FILE = "signature.json"
SIGNATURE_NAME = "serving_default"
CONTENT_TYPE = "application/json"

# Open Inference Protocol datatype -> (numpy dtype, numpy dtype kinds accepted from JSON).
_DATATYPES: dict[str, tuple[type[np.generic], str]] = {
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


# TorchServe's loader instantiates the single class defined in this module, so this module must
# define exactly one class: bad requests are signalled with the built-in ValueError.
class SignatureHandler:
    """Serve a ``torch.export``/TorchScript model described by a packaged ``signature.json``."""

    def __init__(self) -> None:
        self.model: Any = None
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []

    def initialize(self, context: Any) -> None:
        """Load the serialized model and ``signature.json`` from the extracted archive."""
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, SIGNATURE_FILE), encoding="utf-8") as f:
            signature = json.load(f)
        self.inputs, self.outputs = _validate_signature(signature)

        model_path = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        if model_path.endswith(".pt2"):
            self.model = torch.export.load(model_path).module()
        else:
            self.model = torch.jit.load(model_path, map_location="cpu").eval()
        logger.info(
            "loaded %s: inputs %s, outputs %s",
            model_path,
            [(s["name"], s["datatype"], s["shape"]) for s in self.inputs],
            [s["name"] for s in self.outputs],
        )

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        """Answer a TorchServe batch: one JSON string per request, 400s set per request."""
        responses: list[str] = [""] * len(data)
        accepted: list[tuple[int, str, dict[str, np.ndarray]]] = []
        for idx, request in enumerate(data):
            try:
                form, arrays = self._parse(_request_body(request))
            except ValueError as e:
                context.set_response_status(400, "Bad Request", idx=idx)
                responses[idx] = json.dumps({"error": str(e)})
                continue
            accepted.append((idx, form, arrays))

        if accepted:
            # One forward pass for the whole TorchServe batch.
            batch = {
                spec["name"]: np.concatenate([arrays[spec["name"]] for _, _, arrays in accepted])
                for spec in self.inputs
            }
            outputs = self._run(batch)
            start = 0
            for idx, form, arrays in accepted:
                stop = start + len(next(iter(arrays.values())))
                rows = {name: value[start:stop] for name, value in outputs.items()}
                responses[idx] = json.dumps(self._format(form, rows))
                start = stop

        for idx in range(len(data)):
            # Without it TorchServe sends string responses with no Content-Type at all.
            context.set_response_content_type(idx, CONTENT_TYPE)
        return responses

    def _parse(self, body: dict[str, Any]) -> tuple[str, dict[str, np.ndarray]]:
        """Validate one request body; return its form ("row"/"column") and input arrays."""
        signature_name = body.get("signature_name", SIGNATURE_NAME)
        if signature_name != SIGNATURE_NAME:
            raise ValueError(f"signature_name: expected {SIGNATURE_NAME!r}, got {signature_name!r}")
        if "instances" in body and "inputs" in body:
            raise ValueError("body must have either 'instances' or 'inputs', got both")
        if "instances" in body:
            return "row", self._parse_rows(body["instances"])
        if "inputs" in body:
            return "column", self._parse_columns(body["inputs"])
        raise ValueError(f"{_BAD_BODY}, got keys {sorted(body)}")

    def _parse_rows(self, instances: Any) -> dict[str, np.ndarray]:
        if not isinstance(instances, list) or not instances:
            raise ValueError(f"'instances' must be a non-empty list of rows, got {_describe(instances)}")
        names = [spec["name"] for spec in self.inputs]
        columns: dict[str, list[Any]] = {name: [] for name in names}
        for i, row in enumerate(instances):
            if isinstance(row, dict):
                self._check_names(row, where=f"instances[{i}]: ")
                for name in names:
                    columns[name].append(row[name])
            elif len(names) == 1:
                columns[names[0]].append(row)
            else:
                raise ValueError(
                    f"instances[{i}]: the model has inputs {names}, so each row must be an "
                    f"object keyed by input name, got {_describe(row)}"
                )
        return {spec["name"]: _to_array(spec, columns[spec["name"]]) for spec in self.inputs}

    def _parse_columns(self, inputs: Any) -> dict[str, np.ndarray]:
        names = [spec["name"] for spec in self.inputs]
        if isinstance(inputs, dict):
            self._check_names(inputs, where="")
            values = inputs
        elif len(names) == 1:
            values = {names[0]: inputs}
        else:
            raise ValueError(f"'inputs' must be an object keyed by input name {names}, got {_describe(inputs)}")
        arrays = {spec["name"]: _to_array(spec, values[spec["name"]]) for spec in self.inputs}
        batch_sizes = {name: len(array) for name, array in arrays.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"inputs must have the same batch size, got {batch_sizes}")
        return arrays

    def _check_names(self, given: dict[str, Any], where: str) -> None:
        names = [spec["name"] for spec in self.inputs]
        for name in names:
            if name not in given:
                raise ValueError(f"{where}missing input {name!r}")
        for name in given:
            if name not in names:
                raise ValueError(f"{where}unknown input {name!r}, expected inputs {names}")

    def _run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(batch[spec["name"]]) for spec in self.inputs]
        with torch.inference_mode():
            result = self.model(*args)
        names = [spec["name"] for spec in self.outputs]
        if isinstance(result, dict):
            values = [result[name] for name in names]
        elif isinstance(result, torch.Tensor):
            values = [result]
        else:
            values = list(result)
        if len(values) != len(names):
            # A packaging error, not a bad request: let TorchServe answer 5xx.
            raise RuntimeError(f"model returned {len(values)} outputs, signature names {names}")
        return {name: value.detach().cpu().numpy() for name, value in zip(names, values, strict=True)}

    def _format(self, form: str, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        single = outputs[self.outputs[0]["name"]] if len(self.outputs) == 1 else None
        if form == "row":
            if single is not None:
                return {"predictions": single.tolist()}
            n = len(next(iter(outputs.values())))
            return {"predictions": [{name: value[i].tolist() for name, value in outputs.items()} for i in range(n)]}
        if single is not None:
            return {"outputs": single.tolist()}
        return {"outputs": {name: value.tolist() for name, value in outputs.items()}}


def _request_body(request: dict[str, Any]) -> dict[str, Any]:
    """Return the decoded JSON body of one TorchServe request."""
    # TorchServe puts a raw body under "body" (or "data"), already JSON-decoded when the
    # request's Content-Type is application/json, otherwise as bytes.
    body = request.get("body")
    if body is None:
        body = request.get("data")
    if body is None:
        # TorchServe parses a form-encoded body (what `curl -d` sends by default) into form
        # fields, mangling or dropping the JSON: nothing is left to parse.
        raise ValueError(f"{_BAD_BODY}, got no body (send it with Content-Type: application/json)")
    if isinstance(body, bytes | bytearray):
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


def _to_array(spec: dict[str, Any], value: Any) -> np.ndarray:
    """Convert one input's JSON value (batch dim included) to an array checked against spec."""
    name, datatype, shape = spec["name"], spec["datatype"], spec["shape"]
    dtype, kinds = _DATATYPES[datatype]
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
    if len(got_shape) != len(shape) or any(want not in (-1, got) for want, got in zip(shape, got_shape, strict=True)):
        raise ValueError(f"input {name!r}: expected shape {shape}, got {got_shape}")
    if got_shape[0] == 0:
        raise ValueError(f"input {name!r}: expected at least one example, got shape {got_shape}")
    return np.ascontiguousarray(raw, dtype=dtype)


def _validate_signature(signature: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Fail model loading early, with a clear message, on a malformed signature.json."""

    def valid_input(spec: Any) -> bool:
        shape = spec.get("shape")
        return (
            isinstance(spec.get("name"), str)
            and spec.get("datatype") in _DATATYPES
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
            f"{sorted(_DATATYPES)}) and shape, and outputs with a name; got {signature!r}"
        )
    return inputs, outputs


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    if isinstance(value, list):
        return "an empty list" if not value else f"a list of {len(value)}"
    return f"{type(value).__name__} {json.dumps(value)[:40]}"
