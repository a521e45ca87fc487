"""The Open Inference Protocol (v2), as KServe, Triton and MLServer speak it, for either stack.

Typed tensors are converted exactly: the datatype names the numpy dtype, ``data`` is flat and
row-major, and a datatype or shape that does not fit the version's signature is a 400.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version as _package_version
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from gateway.backends.catalog import PLATFORMS as _PLATFORMS
from gateway.core.errors import BadRequest
from gateway.core.restjson import TENSOR_VALUE_SCHEMA, all_finite, dumps, parse_json
from gateway.core.tensors import DATATYPES, Signature, check_shape, datatype_of, to_array, to_json_value
from gateway.core.types import InferenceRequest, InferenceResult, Target
from gateway.protocols import oip_binary
from gateway.protocols.common import json_response, require_signature, routing_headers, signature_of, table_of
from gateway.protocols.keys import require_inference_key
from gateway.protocols.pipeline import Decoded, Encoded
from gateway.routing.table import Resolved, parse_version
from gateway.services import services_of

_VERSION = _package_version("twin-stack-gateway")
router = APIRouter(tags=["Open Inference Protocol (v2)"])
#: Health routes stay open (probes carry no key); model routes need a key when keys are configured
#: (the infer routes are in ``gateway.protocols.routes``).
models = APIRouter(dependencies=[Depends(require_inference_key)], tags=["Open Inference Protocol (v2)"])


#: The infer body, for the OpenAPI description (the routes read the raw body themselves).
_INFER_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": oip_binary.HEADER,
            "in": "header",
            "required": False,
            "description": "binary tensor data extension: the JSON header's length; the tensors' bytes follow it",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "responses": {
        "200": {
            "description": "the outputs; with binary outputs, the JSON header then their bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "headers": {oip_binary.HEADER: {"description": "with binary outputs", "schema": {"type": "integer"}}},
        }
    },
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
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                    "datatype": {"type": "string", "enum": list(DATATYPES)},
                                    "data": {**TENSOR_VALUE_SCHEMA, "description": "the values, row-major (flat)"},
                                    "parameters": {
                                        "type": "object",
                                        "description": "binary_data_size: its bytes follow the JSON header",
                                    },
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
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "the binary tensor data extension: a JSON header, then the binary tensors",
            },
        },
    },
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


@router.get("/v2")
async def server_metadata() -> Response:
    """The server's name, version and the protocol extensions it speaks."""
    return json_response({"name": "twin-stack-gateway", "version": _VERSION, "extensions": [oip_binary.EXTENSION]})


def decode_infer_request(
    payload: Any, signature: Signature, *, bools: bool = True, binary: oip_binary.BinaryReader | None = None
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Decode an OIP infer body into arrays checked against ``signature``, and the output names
    (``bools``: as for ``restjson.decode_request``; ``binary``: the bytes after the JSON header of a
    request in the binary tensor data form, which its inputs with a ``binary_data_size`` take)."""
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
        size = oip_binary.binary_size(where, item.get("parameters"))
        if size is not None:
            if binary is None:
                raise BadRequest(f"{where}: binary_data_size given but the request has no {oip_binary.HEADER} header")
            if "data" in item:
                raise BadRequest(f"{where}: give its values either in 'data' or as binary data, not both")
            array = oip_binary.to_array(name, binary.take(name, size), datatype, shape)
        elif "data" not in item:
            raise BadRequest(f"{where}: missing 'data'")
        else:
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
    if binary is not None:
        binary.finish()
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


def encode_outputs(
    outputs: dict[str, np.ndarray], names: tuple[str, ...], binary: Collection[str] = ()
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Output arrays as OIP output tensors, flat row-major data; those in ``binary`` carry only their
    ``binary_data_size``, and their bytes (``oip_binary.to_bytes``) come second, in order."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in names or tuple(outputs):
        if name not in outputs:
            continue
        array = outputs[name]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if name in binary:
            chunks.append(oip_binary.to_bytes(array))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = to_json_value(array.reshape(-1))
        tensors.append(tensor)
    return tensors, chunks


@dataclass(slots=True)
class InferDecoded(Decoded):
    """An OIP request: also which outputs the caller wants as binary data (``binary_data`` per
    output, else the request's ``binary_data_output``)."""

    binary_outputs: Mapping[str, bool] = field(default_factory=dict)
    binary_default: bool = False


def _binary_outputs(payload: dict[str, Any]) -> tuple[dict[str, bool], bool]:
    default = oip_binary.wants_binary("request", payload.get("parameters"), "binary_data_output")
    chosen: dict[str, bool] = {}
    for wanted in payload.get("outputs") or []:
        where = f"output '{wanted['name']}'"
        choice = oip_binary.wants_binary(where, wanted.get("parameters"), "binary_data")
        if choice is not None:
            chosen[wanted["name"]] = choice
    return chosen, bool(default)


class InferCodec:
    """OIP infer: typed tensors in, typed tensors out; the caller's ``id`` is echoed. Tensors may
    come and go as JSON or in the binary tensor data form (``oip_binary``), mixed in one request."""

    protocol = "oip"
    tag = "Open Inference Protocol (v2)"
    openapi = _INFER_DOC
    passthrough = False
    headers: Mapping[str, str] = {}

    def decode(self, body: bytes, signature: Signature, max_depth: int, headers: Mapping[str, str]) -> Decoded:
        length = oip_binary.header_length(headers, len(body))
        binary = None
        if length is not None:
            binary = oip_binary.BinaryReader(memoryview(body)[length:])
            body = body[:length]
        payload, bools = parse_json(body, max_depth)
        inputs, names = decode_infer_request(payload, signature, bools=bools, binary=binary)
        chosen, default = _binary_outputs(payload)
        request_id = payload.get("id")
        return InferDecoded(
            InferenceRequest(inputs=inputs, form="column", output_filter=names),
            request_id if isinstance(request_id, str) else None,
            chosen,
            default,
        )

    def encode(self, decoded: Decoded, result: InferenceResult, target: Target, signature: Signature) -> Encoded:
        outputs = result.outputs(signature)
        chosen, default = (
            (decoded.binary_outputs, decoded.binary_default) if isinstance(decoded, InferDecoded) else ({}, False)
        )
        binary = {name for name in outputs if chosen.get(name, default)}
        tensors, chunks = encode_outputs(outputs, decoded.request.output_filter, binary)
        answer: dict[str, Any] = {"model_name": target.model, "model_version": str(target.version), "outputs": tensors}
        if decoded.request_id is not None:
            answer["id"] = decoded.request_id
        header = dumps(answer, finite=all_finite(a for name, a in outputs.items() if name not in binary))
        if not chunks:
            return Encoded(header)
        headers = {oip_binary.HEADER: str(len(header))}
        return Encoded(b"".join([header, *chunks]), oip_binary.MEDIA_TYPE, headers)


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
