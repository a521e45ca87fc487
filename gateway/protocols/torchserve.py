"""TorchServe's inference API paths, so an existing TorchServe client keeps working.

For TorchServe versions the body is passed through unchanged, whatever its content type, and the
answer comes back as TorchServe gave it. For TF Serving versions the body must be TF Serving REST
JSON (the example models' contract), and the answer is in the same form.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from gateway.admin.auth import require_inference_key
from gateway.backends.base import InferenceRequest
from gateway.protocols.common import (
    dispatch,
    mark_route,
    read_body,
    require_signature,
    routing_headers,
    settings_of,
    signature_of,
    table_of,
    timed,
)
from gateway.protocols.limits import decode_bounded
from gateway.restjson import (
    PREDICT_BODY_EXAMPLES,
    PREDICT_BODY_SCHEMA,
    decode_predict_body,
    result_body,
)
from gateway.routing.table import Resolved, parse_version

router = APIRouter(dependencies=[Depends(require_inference_key)], tags=["TorchServe inference API"])

#: The body and answer, for the OpenAPI description (the routes read the raw body themselves).
_PREDICTIONS_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "TorchServe versions get the body unchanged, whatever its content type; "
        "TF Serving versions take a TF Serving REST predict body",
        "content": {
            "application/json": {"schema": PREDICT_BODY_SCHEMA, "examples": PREDICT_BODY_EXAMPLES},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {"200": {"description": "the backend's answer, in its content type", "content": {"*/*": {}}}},
}


async def _predictions(request: Request, resolved: Resolved) -> Response:
    mark_route(request, resolved)
    target = resolved.target
    body = await read_body(request)
    # The answer's content type is the backend's (or, passed through, the model handler's): a
    # browser must not sniff it into something it would run.
    headers = {**routing_headers(resolved), "X-Content-Type-Options": "nosniff"}
    if target.backend.raw_passthrough:
        content_type = request.headers.get("content-type", "application/octet-stream")
        raw = await timed(request, target.backend.kind, lambda: target.backend.forward(target, body, content_type))
        return Response(raw.body, status_code=raw.status, media_type=raw.content_type, headers=headers)
    signature = require_signature(target, await signature_of(target))
    depth = settings_of(request).max_json_depth
    inputs, form = await decode_bounded(request, len(body), lambda: decode_predict_body(body, signature, depth))
    result = await dispatch(request, resolved, InferenceRequest(inputs=inputs, form=form))
    content = result_body(result, form, signature)
    return Response(content, media_type="application/json", headers=headers)


@router.post("/predictions/{model}", openapi_extra=_PREDICTIONS_DOC)
async def predictions(model: str, request: Request) -> Response:
    """Predict with the model's default version."""
    return await _predictions(request, table_of(request).resolve(model, headers=request.headers))


@router.post("/predictions/{model}/{version}", openapi_extra=_PREDICTIONS_DOC)
async def predictions_version(model: str, version: str, request: Request) -> Response:
    """Predict with an explicit version."""
    return await _predictions(request, table_of(request).resolve(model, parse_version(version)))
