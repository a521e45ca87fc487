"""The real adapters with nothing listening at their addresses, behind the whole app: the client
learns which backend failed and how, never where it runs; the log line has the request ID and
the full detail, address included."""

from __future__ import annotations

import logging
import socket

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.backends.tfserving.client import TFServingBackend
from gateway.backends.torchserve import TorchServeBackend
from gateway.requestid import RequestIdFilter

ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable(settings):
    ts, mgmt, tf = closed_port(), closed_port(), closed_port()
    backends = {
        "torchserve": TorchServeBackend(
            f"http://127.0.0.1:{ts}", f"http://127.0.0.1:{mgmt}", store=settings.model_store
        ),
        "tfserving": TFServingBackend(f"127.0.0.1:{tf}", timeout=5.0, base_path="/models"),
    }
    with TestClient(create_app(settings, backends=backends)) as client:
        yield client, {"torchserve": ts, "tfserving": tf}


@pytest.mark.parametrize(
    ("path", "stack", "expected"),
    [
        ("/v1/models/toy/versions/1:predict", "torchserve", "torchserve toy v1: cannot connect (connection refused)"),
        ("/predictions/toy/1", "torchserve", "torchserve toy v1: cannot connect (connection refused)"),
        ("/v1/models/toy/versions/2:predict", "tfserving", "tfserving toy v2: unavailable (UNAVAILABLE): "),
        ("/v2/models/toy/versions/2/infer", "tfserving", "tfserving toy v2: unavailable (UNAVAILABLE): "),
    ],
)
def test_an_unreachable_backend_is_named_without_its_address(unreachable, caplog, path, stack, expected):
    client, ports = unreachable
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.WARNING, logger="gateway")
    body = ROW if "v2" not in path else {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                                     "data": [1.0, 2.0, 3.0, 4.0]}]}  # fmt: skip
    response = client.post(path, json=body, headers={"X-Request-ID": f"unreachable-{stack}"})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error.startswith(expected), error
    assert "127.0.0.1" not in response.text and str(ports[stack]) not in response.text
    assert "ipv4" not in response.text
    lines = [r for r in caplog.records if r.name == "gateway" and "-> 503" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].request_id == f"unreachable-{stack}"
    logged = lines[0].getMessage()
    assert f"127.0.0.1:{ports[stack]}" in logged or f"'127.0.0.1', {ports[stack]}" in logged, logged
