"""CORS is off unless origins are configured; then only those origins, and the routing headers are readable."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.app import create_app

ROW = {"instances": [[0.5, -1.0, 0.25, 2.0]]}
ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


def test_cors_is_off_by_default(client):
    r = client.post("/v1/models/toy:predict", json=ROW, headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    r = client.options("/v1/models/toy:predict", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in r.headers


def test_configured_origins_and_only_those(settings, fake_backends):
    settings = settings.model_copy(update={"cors_origins": [ORIGIN, "https://other.example.com"]})
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        r = client.options("/v1/models/toy:predict", headers=PREFLIGHT)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        r = client.post("/v1/models/toy:predict", json=ROW, headers={"Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        assert "x-model-version" in r.headers["access-control-expose-headers"].lower()
        r = client.options("/v1/models/toy:predict", headers={**PREFLIGHT, "Origin": "https://evil.example.com"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = client.post("/v1/models/toy:predict", json=ROW, headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in r.headers


def test_the_binary_tensor_header_may_be_sent_and_read(settings, fake_backends):
    settings = settings.model_copy(update={"cors_origins": ORIGIN})
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        preflight = {**PREFLIGHT, "Access-Control-Request-Headers": "inference-header-content-length"}
        r = client.options("/v2/models/toy/infer", headers=preflight)
        assert (
            r.status_code == 200
            and "inference-header-content-length" in r.headers["access-control-allow-headers"].lower()
        )
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
                "parameters": {"binary_data_output": True}}  # fmt: skip
        r = client.post("/v2/models/toy/infer", json=body, headers={"Origin": ORIGIN})
        assert (
            r.status_code == 200
            and "inference-header-content-length" in r.headers["access-control-expose-headers"].lower()
        )
