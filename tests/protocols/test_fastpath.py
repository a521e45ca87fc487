"""The inference fast path answers exactly as the FastAPI routes it stands in for would."""

from __future__ import annotations

import itertools
import re

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.app import create_app
from gateway.protocols.fastpath import InferenceRoutes
from gateway.protocols.instrument import protocol_of
from gateway.protocols.routes import ROUTES, match

ROW = {"instances": [[0.5, -1.0, 0.25, 2.0]]}
V2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1.0, 0.25, 2.0]}]}
#: Values for each path parameter: found, unknown, and malformed (``a:b`` is a valid segment).
SAMPLES = {"model": ["toy", "nope", "a:b"], "version": ["1", "2", "9", "x"], "label": ["canary", "stable", "nope"]}
BODIES = [ROW, V2, {"inputs": [[1, 2, 3, 4]]}, {"instances": [[1, 2]]}, {"inputs": []}, "not json"]


def _paths(template: str) -> list[str]:
    """Every combination of sample values in ``template``, plus near misses around its first one."""
    names = re.findall(r"{(\w+)}", template)
    paths = [
        template.format(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*(SAMPLES[n] for n in names))
    ]
    first = paths[0]
    return [*paths, first + "/", first + "/x", "/x" + first, first.replace("toy", "toy/extra", 1)]


def _requests() -> list[tuple[str, object]]:
    """Requests generated from the route table: every path of every route, with every body where
    the model exists."""
    return [
        (path, body)
        for route in ROUTES
        for path in _paths(route.path)
        for body in (BODIES if "/toy" in path else BODIES[:1])
    ]


REQUESTS = _requests()


def _answers(app, keys: dict[str, str] | None = None) -> list[tuple[int, bytes, dict[str, str]]]:
    answers = []
    with TestClient(app) as client:
        for path, body in REQUESTS:
            content = body.encode() if isinstance(body, str) else None
            r = client.post(path, json=None if content else body, content=content, headers=keys)
            headers = {k: v for k, v in r.headers.items() if k.startswith("x-") and k != "x-request-id"}
            answers.append((r.status_code, r.content, headers))
    return answers


@pytest.mark.parametrize("keys", [None, {"inference_keys": [SecretStr("key-0123456789abcdef")]}])
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
    assert {route.path for route in ROUTES} == posted
    for route in ROUTES:  # each route is exercised above, reached by the fast path, and labelled
        path = _paths(route.path)[0]
        assert any(p == path for p, _ in REQUESTS)
        assert match(path) is not None and match(path)[0] is route
        assert protocol_of(path) == route.codec.protocol
