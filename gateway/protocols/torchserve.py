"""TorchServe's inference API paths, so an existing TorchServe client keeps working.

For TorchServe versions the body is passed through unchanged, whatever its content type, and the
answer comes back as TorchServe gave it. For TF Serving versions the body must be TF Serving REST
JSON (the example models' contract), and the answer is in the same form. Both variants go through
the one pipeline (``gateway.protocols.pipeline``): the canary guard and shadow copies see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.restjson import (
    PREDICT_BODY_EXAMPLES,
    PREDICT_BODY_SCHEMA,
    decode_predict_body,
    result_body,
)
from gateway.core.tensors import Signature
from gateway.core.types import InferenceRequest, InferenceResult, Target
from gateway.protocols.pipeline import Decoded, Encoded

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


class PredictionsCodec:
    """TorchServe's paths: the raw body for TorchServe versions, TF Serving REST JSON for others.

    The answer's content type is the backend's (or, passed through, the model handler's): a browser
    must not sniff it into something it would run, hence ``nosniff`` on every answer.
    """

    protocol = "torchserve"
    tag = "TorchServe inference API"
    openapi = _PREDICTIONS_DOC
    passthrough = True
    headers: Mapping[str, str] = {"X-Content-Type-Options": "nosniff"}

    def decode(self, body: bytes, signature: Signature, max_depth: int, headers: Mapping[str, str]) -> Decoded:
        inputs, form = decode_predict_body(body, signature, max_depth)
        return Decoded(InferenceRequest(inputs=inputs, form=form))

    def encode(self, decoded: Decoded, result: InferenceResult, target: Target, signature: Signature) -> Encoded:
        return Encoded(result_body(result, decoded.request.form, signature))


CODEC = PredictionsCodec()
