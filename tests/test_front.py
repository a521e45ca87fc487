"""The front layers (gateway/app.py ``GatewayApp``): inference POSTs are answered before FastAPI's
own stack, and what that stack did for them (an unexpected error's answer) is done the same."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.app import GatewayApp, create_app
from gateway.protocols.fastpath import InferenceRoutes

ROW = {"instances": [[0.5, -1.0, 0.25, 2.0]]}


def test_inference_posts_never_enter_fastapis_stack(settings, fake_backends, monkeypatch):
    entered: list[str] = []
    fastapi = GatewayApp.fastapi

    async def counting(self, scope, receive, send):
        entered.append(scope["path"])
        await fastapi(self, scope, receive, send)

    monkeypatch.setattr(GatewayApp, "fastapi", counting)
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        assert client.post("/v1/models/toy/versions/1:predict", json=ROW).status_code == 200
        assert client.post("/v2/models/toy/versions/1/infer", content=b"not json").status_code == 400
        assert entered == []
        assert client.get("/v2/health/live").status_code == 200
        assert entered == ["/v2/health/live"]


def test_an_unexpected_error_gets_the_same_500_on_the_fast_path_with_a_request_id(settings, fake_backends):
    fake_backends["tfserving"].fail = RuntimeError("boom")  # type: ignore[assignment]
    answers = []
    for fast in (True, False):
        app = create_app(settings, backends=fake_backends)
        if not fast:
            app.user_middleware = [m for m in app.user_middleware if m.cls is not InferenceRoutes]
        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.post("/v1/models/toy/versions/2:predict", json=ROW)
            answers.append((r.status_code, r.json()))
            if fast:
                assert r.headers["x-request-id"]
    assert answers[0] == answers[1] == (500, {"error": "internal error in the gateway; see its log"})
