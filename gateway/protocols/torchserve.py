"""TorchServe's inference API paths, so an existing TorchServe client keeps working.

For TorchServe versions the body is passed through unchanged, whatever its content type, and the
answer comes back as TorchServe gave it. For TF Serving versions the body must be TF Serving REST
JSON (the example models' contract), and the answer is in the same form.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from gateway.admin.auth import require_inference_key
from gateway.backends.base import InferenceRequest
from gateway.protocols.common import (
    dispatch,
    mark_route,
    read_body,
    require_signature,
    routing_headers,
    signature_of,
    table_of,
    timed,
)
from gateway.restjson import decode_request, parse_json, result_body
from gateway.routing.table import Resolved, parse_version

router = APIRouter(dependencies=[Depends(require_inference_key)], tags=["TorchServe inference API"])


async def _predictions(request: Request, resolved: Resolved) -> Response:
    mark_route(request, resolved)
    target = resolved.target
    body = await read_body(request)
    headers = routing_headers(resolved)
    if target.backend.raw_passthrough:
        content_type = request.headers.get("content-type", "application/octet-stream")
        raw = await timed(request, target.backend.kind, lambda: target.backend.forward(target, body, content_type))
        return Response(raw.body, status_code=raw.status, media_type=raw.content_type, headers=headers)
    signature = require_signature(target, await signature_of(target))
    inputs, form = decode_request(parse_json(body), signature)
    result = await dispatch(request, resolved, InferenceRequest(inputs=inputs, form=form))
    content = result_body(result, form, signature)
    return Response(content, media_type="application/json", headers=headers)


@router.post("/predictions/{model}")
async def predictions(model: str, request: Request) -> Response:
    """Predict with the model's default version."""
    return await _predictions(request, table_of(request).resolve(model, headers=request.headers))


@router.post("/predictions/{model}/{version}")
async def predictions_version(model: str, version: str, request: Request) -> Response:
    """Predict with an explicit version."""
    return await _predictions(request, table_of(request).resolve(model, parse_version(version)))
