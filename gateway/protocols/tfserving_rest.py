"""TF Serving's REST API (v1), for models on either stack.

An existing TF Serving REST client pointed at the gateway keeps working: the same paths, the row
and column forms, ``{"b64": ...}`` binary values, and errors as ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from gateway.admin.auth import require_inference_key
from gateway.backends.base import InferenceRequest, Target
from gateway.backends.tfserving.codec import DATATYPE_TO_TF_NAME as _TF_DTYPES
from gateway.protocols.common import (
    dispatch,
    json_response,
    mark_route,
    read_body,
    require_signature,
    routing_headers,
    settings_of,
    signature_of,
    table_of,
)
from gateway.protocols.limits import decode_bounded
from gateway.restjson import (
    PREDICT_BODY_EXAMPLES,
    PREDICT_BODY_SCHEMA,
    decode_predict_body,
    result_body,
)
from gateway.routing.table import Resolved, parse_version
from gateway.tensors import Signature

router = APIRouter(dependencies=[Depends(require_inference_key)], tags=["TF Serving REST (v1)"])

#: The predict body, for the OpenAPI description (the routes read the raw body themselves).
_PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PREDICT_BODY_SCHEMA, "examples": PREDICT_BODY_EXAMPLES}},
    }
}


async def _predict(request: Request, resolved: Resolved) -> Response:
    mark_route(request, resolved)
    target = resolved.target
    body = await read_body(request)
    signature = require_signature(target, await signature_of(target))
    depth = settings_of(request).max_json_depth
    inputs, form = await decode_bounded(request, len(body), lambda: decode_predict_body(body, signature, depth))
    result = await dispatch(request, resolved, InferenceRequest(inputs=inputs, form=form, body=body))
    content = result_body(result, form, signature)
    return Response(content, media_type="application/json", headers=routing_headers(resolved))


@router.post("/v1/models/{model}:predict", openapi_extra=_PREDICT_DOC)
async def predict(model: str, request: Request) -> Response:
    """Predict with the model's default version (its ``stable`` label, else the highest)."""
    return await _predict(request, table_of(request).resolve(model, headers=request.headers))


@router.post("/v1/models/{model}/versions/{version}:predict", openapi_extra=_PREDICT_DOC)
async def predict_version(model: str, version: str, request: Request) -> Response:
    """Predict with an explicit version."""
    return await _predict(request, table_of(request).resolve(model, parse_version(version)))


@router.post("/v1/models/{model}/labels/{label}:predict", openapi_extra=_PREDICT_DOC)
async def predict_label(model: str, label: str, request: Request) -> Response:
    """Predict with the version a label points at."""
    return await _predict(request, table_of(request).resolve(model, label=label))


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
