"""The inference fast path answers exactly as the FastAPI routes it stands in for would."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.app import create_app
from gateway.protocols import fastpath
from gateway.protocols.fastpath import InferenceRoutes

ROW = {"instances": [[0.5, -1.0, 0.25, 2.0]]}
V2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1.0, 0.25, 2.0]}]}
REQUESTS = [
    ("/v1/models/toy:predict", ROW),
    ("/v1/models/toy/versions/2:predict", ROW),
    ("/v1/models/toy/versions/3:predict", {"inputs": [[1, 2, 3, 4]]}),
    ("/v1/models/toy/versions/x:predict", ROW),
    ("/v1/models/toy/versions/9:predict", ROW),
    ("/v1/models/toy/labels/canary:predict", ROW),
    ("/v1/models/toy/labels/nope:predict", ROW),
    ("/v1/models/a:b:predict", ROW),
    ("/v1/models/toy:predict/", ROW),
    ("/v1/models/toy/extra/1:predict", ROW),
    ("/v1/models/toy:predict", {"instances": [[1, 2]]}),
    ("/v1/models/toy:predict", "not json"),
    ("/v2/models/toy/infer", V2),
    ("/v2/models/toy/versions/2/infer", V2),
    ("/v2/models/toy/versions/2/infer/x", V2),
    ("/v2/models/toy/infer", {"inputs": []}),
    ("/predictions/toy", ROW),
    ("/predictions/toy/1", ROW),
    ("/predictions/toy/1/2", ROW),
    ("/predictions/nope", ROW),
]


def _answers(app, keys: dict[str, str] | None = None) -> list[tuple[int, bytes, dict[str, str]]]:
    answers = []
    with TestClient(app) as client:
        for path, body in REQUESTS:
            content = body.encode() if isinstance(body, str) else None
            r = client.post(path, json=None if content else body, content=content, headers=keys)
            headers = {k: v for k, v in r.headers.items() if k.startswith("x-") and k != "x-request-id"}
            answers.append((r.status_code, r.content, headers))
    return answers


@pytest.mark.parametrize("keys", [None, {"inference_keys": SecretStr("key-0123456789abcdef")}])
def test_answers_are_those_of_the_fastapi_routes(settings, fake_backends, keys):
    settings = settings.model_copy(update=keys or {})
    fast = create_app(settings, backends=fake_backends)
    plain = create_app(settings, backends=fake_backends)
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not InferenceRoutes]
    assert len(plain.user_middleware) == len(fast.user_middleware) - 1
    fast_answers = _answers(fast)
    assert fast_answers == _answers(plain)
    if keys:
        assert {status for status, _, _ in fast_answers} == {401, 404}  # 404: paths that are no route


def test_every_inference_route_is_on_the_fast_path(settings, fake_backends):
    app = create_app(settings, backends=fake_backends)
    schema = app.openapi()["paths"]
    posted = {path for path, ops in schema.items() if "post" in ops and not path.startswith("/admin")}
    assert {pattern.pattern.replace("(?P<", "{").replace(">[^/]+)", "}") for pattern, _ in fastpath._ROUTES} == posted
