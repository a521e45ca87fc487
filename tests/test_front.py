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


def test_an_inference_answer_goes_to_the_servers_send_directly_with_its_request_id_and_metrics(settings, fake_backends):
    """The fast path does the request-ID and metrics layers' work itself: no ``send`` wrapper sits
    between the answer and the server, and the answer still has its ID and is counted once."""
    import json
    import sys

    from starlette.responses import Response

    from gateway import metrics

    labels = {"model": "toy", "version": "1", "backend": "torchserve", "protocol": "tfserving_rest", "code": "200"}
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        app = client.app
        callers: list[object] = []
        started: list[dict] = []
        body = json.dumps(ROW).encode()

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            callers.append(sys._getframe(1).f_locals.get("self"))
            if message["type"] == "http.response.start":
                started.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/models/toy/versions/1:predict",
            "raw_path": b"/v1/models/toy/versions/1:predict",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"trace-42")],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("testserver", 80),
            "client": ("testclient", 50000),
            "root_path": "",
        }
        before = metrics.REGISTRY.get_sample_value("gateway_requests_total", labels) or 0.0
        client.portal.call(app, scope, receive, send)
        after = metrics.REGISTRY.get_sample_value("gateway_requests_total", labels)
    assert len(callers) == 2 and all(isinstance(c, Response) for c in callers), callers
    assert started[0]["status"] == 200 and (b"x-request-id", b"trace-42") in started[0]["headers"]
    assert after == before + 1
