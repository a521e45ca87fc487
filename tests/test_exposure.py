"""What the public port shows: /metrics can move to a port of its own, the API docs can be
switched off, and pass-through answers are not content-sniffed."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from fastapi.testclient import TestClient
from localstack import free_port

from gateway.app import create_app


def test_metrics_on_their_own_port_are_not_on_the_public_one(settings, fake_backends):
    port = free_port()
    app = create_app(settings.model_copy(update={"metrics_port": port}), backends=fake_backends)
    with TestClient(app) as client:
        assert client.post("/v1/models/toy:predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 200
        assert client.get("/metrics").status_code == 404
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert response.status == 200
        assert 'gateway_requests_total{backend="torchserve",code="200",model="toy"' in text
    with pytest.raises(ConnectionRefusedError):  # closed with the app
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


def test_metrics_stay_on_the_public_port_by_default(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and "gateway_requests_total" in r.text


def test_the_api_docs_can_be_switched_off(settings, fake_backends):
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [200, 200, 200]
    app = create_app(settings.model_copy(update={"docs_enabled": False}), backends=fake_backends)
    with TestClient(app) as client:
        assert [client.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404, 404, 404]
        assert client.get("/v2/health/live").status_code == 200


def test_pass_through_answers_are_not_sniffed(client):
    r = client.post("/predictions/toy/3", content=b"<script>alert(1)</script>", headers={"Content-Type": "text/html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = client.post("/predictions/toy/2", json={"instances": [[1, 2, 3, 4]]})  # a TF Serving version
    assert r.headers["X-Content-Type-Options"] == "nosniff"
