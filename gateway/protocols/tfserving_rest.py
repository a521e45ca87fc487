"""TF Serving's REST API (v1), for models on either stack.

An existing TF Serving REST client pointed at the gateway keeps working: the same paths, the row
and column forms, ``{"b64": ...}`` binary values, and errors as ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from gateway.backends.tfserving.codec import DATATYPE_TO_TF_NAME as _TF_DTYPES
from gateway.core.restjson import (
    PREDICT_BODY_EXAMPLES,
    PREDICT_BODY_SCHEMA,
    decode_predict_body,
    result_body,
)
from gateway.core.tensors import Signature
from gateway.core.types import InferenceRequest, InferenceResult, Target
from gateway.protocols.common import json_response, require_signature, routing_headers, signature_of, table_of
from gateway.protocols.keys import require_inference_key
from gateway.protocols.pipeline import Decoded, Encoded
from gateway.routing.table import Resolved, parse_version

#: The status and metadata routes; the predict routes are in ``gateway.protocols.routes``.
router = APIRouter(dependencies=[Depends(require_inference_key)], tags=["TF Serving REST (v1)"])

#: The predict body, for the OpenAPI description (the routes read the raw body themselves).
_PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PREDICT_BODY_SCHEMA, "examples": PREDICT_BODY_EXAMPLES}},
    }
}


class PredictCodec:
    """TF Serving REST predict: the row or column form in, the same form out.

    The caller's body rides along with the decoded inputs, so a backend that speaks this form
    (the example TorchServe handler) forwards it without encoding it again.
    """

    protocol = "tfserving_rest"
    tag = "TF Serving REST (v1)"
    openapi = _PREDICT_DOC
    passthrough = False
    headers: Mapping[str, str] = {}

    def decode(self, body: bytes, signature: Signature, max_depth: int, headers: Mapping[str, str]) -> Decoded:
        inputs, form = decode_predict_body(body, signature, max_depth)
        return Decoded(InferenceRequest(inputs=inputs, form=form, body=body))

    def encode(self, decoded: Decoded, result: InferenceResult, target: Target, signature: Signature) -> Encoded:
        return Encoded(result_body(result, decoded.request.form, signature))


CODEC = PredictCodec()


async def _status(targets: list[Target]) -> dict[str, Any]:
    statuses = []
    for target in targets:
        status = await target.backend.status(target.model, target.version)
        statuses.append(
            {
                "version": str(target.version),
                "state": status.state,
                "status": {
                    "error_code": "OK" if not status.error else "UNKNOWN",
                    "error_message": status.error,
                },
            }
        )
    return {"model_version_status": statuses}


@router.get("/v1/models/{model}")
async def model_status(model: str, request: Request) -> Response:
    """The state of every version of the model, as TF Serving reports it."""
    routes = table_of(request).model(model)
    return json_response(await _status([routes.versions[v] for v in sorted(routes.versions)]))


@router.get("/v1/models/{model}/versions/{version}")
async def version_status(model: str, version: str, request: Request) -> Response:
    """The state of one version."""
    target = table_of(request).model(model).version(parse_version(version))
    return json_response(await _status([target]))


def _signature_def(signature: Signature) -> dict[str, Any]:
    def infos(specs: Any) -> dict[str, Any]:
        return {
            s.name: {
                "dtype": _TF_DTYPES.get(s.datatype, "DT_INVALID"),
                "tensor_shape": {
                    "dim": [{"size": str(d), "name": ""} for d in s.shape],
                    "unknown_rank": False,
                },
                "name": s.name,
            }
            for s in specs
        }

    return {
        "inputs": infos(signature.inputs),
        "outputs": infos(signature.outputs),
        "method_name": "tensorflow/serving/predict",
    }


async def _metadata(resolved: Resolved) -> Response:
    target = resolved.target
    signature = require_signature(target, await signature_of(target))
    body = {
        "model_spec": {"name": target.model, "signature_name": "", "version": str(target.version)},
        "metadata": {"signature_def": {"signature_def": {"serving_default": _signature_def(signature)}}},
    }
    return json_response(body, headers=routing_headers(resolved))


@router.get("/v1/models/{model}/metadata")
async def metadata(model: str, request: Request) -> Response:
    """The default version's signature, in TF Serving's metadata shape."""
    return await _metadata(table_of(request).model(model).stable())


@router.get("/v1/models/{model}/versions/{version}/metadata")
async def version_metadata(model: str, version: str, request: Request) -> Response:
    """One version's signature, in TF Serving's metadata shape."""
    return await _metadata(table_of(request).resolve(model, parse_version(version)))
