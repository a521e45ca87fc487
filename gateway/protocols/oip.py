"""The Open Inference Protocol (v2), as KServe, Triton and MLServer speak it, for either stack.

Typed tensors are converted exactly: the datatype names the numpy dtype, ``data`` is flat and
row-major, and a datatype or shape that does not fit the version's signature is a 400.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from gateway.admin.auth import require_inference_key
from gateway.backends.base import InferenceRequest, InferenceResult, Target
from gateway.backends.catalog import PLATFORMS as _PLATFORMS
from gateway.errors import BadRequest
from gateway.protocols.common import json_response, require_signature, routing_headers, signature_of, table_of
from gateway.protocols.pipeline import Decoded
from gateway.restjson import TENSOR_VALUE_SCHEMA, all_finite, dumps, may_hold_bools, parse_json, result_outputs
from gateway.routing.table import Resolved, parse_version
from gateway.services import services_of
from gateway.tensors import DATATYPES, Signature, check_shape, datatype_of, to_array, to_json_value

router = APIRouter(tags=["Open Inference Protocol (v2)"])
#: Health routes stay open (probes carry no key); model routes need a key when keys are configured
#: (the infer routes are in ``gateway.protocols.routes``).
models = APIRouter(dependencies=[Depends(require_inference_key)], tags=["Open Inference Protocol (v2)"])


#: The infer body, for the OpenAPI description (the routes read the raw body themselves).
_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string", "description": "echoed in the answer"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                    "datatype": {"type": "string", "enum": list(DATATYPES)},
                                    "data": {**TENSOR_VALUE_SCHEMA, "description": "the values, row-major (flat)"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "description": "the outputs to return (default: all)",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                            },
                        },
                    },
                },
                "example": {
                    "id": "42",
                    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}],
                },
            }
        },
    }
}


@router.get("/v2/health/live")
async def live() -> Response:
    """The gateway process is up."""
    return json_response({"live": True})


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    """The gateway is ready to route: its routing table is built and it is not shutting down.

    The body also shows each backend's circuit (``closed``, ``open``, ``half-open``); an open
    circuit does not make the gateway unready, since its other backend's models still answer.
    """
    is_ready = bool(getattr(request.app.state, "ready", False))
    guards = services_of(request).backend_guards
    body = {"ready": is_ready, "backends": {kind: guard.state for kind, guard in sorted(guards.items())}}
    return json_response(body, status_code=200 if is_ready else 503)


def decode_infer_request(
    payload: Any, signature: Signature, *, bools: bool = True
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Decode an OIP infer body into arrays checked against ``signature``, and the output names
    (``bools``: as for ``restjson.decode_request``)."""
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object with an 'inputs' list")
    items = payload.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    for i, item in enumerate(items):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
        name = item.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"{where}.name must be a string")
        where = f"input '{name}'"
        if name in inputs:
            raise BadRequest(f"{where} is given more than once in 'inputs'")
        spec = signature.input(name)
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise BadRequest(f"{where}: datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
        if datatype != spec.datatype:
            raise BadRequest(f"{where}: expected datatype {spec.datatype}, got {datatype}")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(f"{where}: shape must be a list of non-negative integers")
        if "data" not in item:
            raise BadRequest(f"{where}: missing 'data'")
        array = to_array(name, item["data"], datatype, bools=bools)
        count = math.prod(shape)
        if array.size != count:
            raise BadRequest(f"{where}: shape {shape} needs {count} values, got {array.size}")
        try:
            array = array.reshape(shape)
        except ValueError as exc:  # more dimensions than numpy allows, or a size beyond its index type
            raise BadRequest(f"{where}: shape {shape} is not a valid tensor shape ({exc})") from None
        check_shape(spec, array)
        inputs[name] = array
    for spec in signature.inputs:
        if spec.name not in inputs:
            raise BadRequest(f"missing input '{spec.name}'")
    wanted = payload.get("outputs") or []
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    names = tuple(o["name"] for o in wanted)
    known = {s.name for s in signature.outputs}
    for name in names:
        if name not in known:
            raise BadRequest(f"unknown output '{name}' (outputs: {', '.join(sorted(known))})")
    return inputs, names


def encode_outputs(outputs: dict[str, np.ndarray], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Output arrays as OIP output tensors, flat row-major data."""
    selected = names or tuple(outputs)
    return [
        {
            "name": name,
            "datatype": datatype_of(outputs[name]),
            "shape": list(outputs[name].shape),
            "data": to_json_value(outputs[name].reshape(-1)),
        }
        for name in selected
        if name in outputs
    ]


class InferCodec:
    """OIP infer: typed tensors in, typed tensors out; the caller's ``id`` is echoed."""

    protocol = "oip"
    tag = "Open Inference Protocol (v2)"
    openapi = _INFER_DOC
    passthrough = False
    headers: Mapping[str, str] = {}

    def decode(self, body: bytes, signature: Signature, max_depth: int) -> Decoded:
        payload = parse_json(body, max_depth)
        inputs, names = decode_infer_request(payload, signature, bools=may_hold_bools(body))
        request_id = payload.get("id")
        return Decoded(
            InferenceRequest(inputs=inputs, form="column", output_filter=names),
            request_id if isinstance(request_id, str) else None,
        )

    def encode(self, decoded: Decoded, result: InferenceResult, target: Target, signature: Signature) -> bytes:
        outputs = result_outputs(result, signature)
        answer: dict[str, Any] = {
            "model_name": target.model,
            "model_version": str(target.version),
            "outputs": encode_outputs(outputs, decoded.request.output_filter),
        }
        if decoded.request_id is not None:
            answer["id"] = decoded.request_id
        return dumps(answer, finite=all_finite(outputs.values()))


CODEC = InferCodec()


async def _metadata(resolved: Resolved, versions: list[int]) -> Response:
    target = resolved.target
    signature = require_signature(target, await signature_of(target))
    body = {
        "name": target.model,
        "versions": [str(v) for v in versions],
        "platform": _PLATFORMS.get(target.backend.kind, target.backend.kind),
        "inputs": [s.to_json() for s in signature.inputs],
        "outputs": [s.to_json() for s in signature.outputs],
    }
    return json_response(body, headers=routing_headers(resolved))


@models.get("/v2/models/{model}")
async def model_metadata(model: str, request: Request) -> Response:
    """Metadata of the model's default version, and the list of its versions."""
    table = table_of(request)
    return await _metadata(table.model(model).stable(), sorted(table.model(model).versions))


@models.get("/v2/models/{model}/versions/{version}")
async def version_metadata(model: str, version: str, request: Request) -> Response:
    """Metadata of one version."""
    resolved = table_of(request).resolve(model, parse_version(version))
    return await _metadata(resolved, [resolved.target.version])


async def _ready(resolved: Resolved) -> Response:
    target = resolved.target
    status = await target.backend.status(target.model, target.version)
    body = {"name": target.model, "version": str(target.version), "ready": status.available}
    if not status.available:
        body["error"] = f"version {target.version} is {status.state}: {status.error}".rstrip(": ")
    return json_response(body, status_code=200 if status.available else 503, headers=routing_headers(resolved))


@models.get("/v2/models/{model}/ready")
async def model_ready(model: str, request: Request) -> Response:
    """200 when the default version is loaded and serving on its backend, else 503."""
    return await _ready(table_of(request).model(model).stable())


@models.get("/v2/models/{model}/versions/{version}/ready")
async def version_ready(model: str, version: str, request: Request) -> Response:
    """200 when the version is loaded and serving on its backend, else 503."""
    return await _ready(table_of(request).resolve(model, parse_version(version)))
