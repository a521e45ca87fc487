"""The gRPC doors go through the same pipeline as REST: shadow copies and the canary guard see
their traffic, and the server stops with the app."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.core.errors import BackendError
from tests.protocols.rpc.test_tfserving_grpc import predict, predict_request
from tests.waiting import wait_until

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
X = np.ones((1, 4), np.float32)


def _model(client) -> dict:
    return client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]


def test_shadow_copies_of_grpc_traffic(grpc_client, channel, fake_backends):
    client, address = grpc_client
    r = client.put("/admin/models/toy/shadow", json={"version": 2, "percent": 100}, headers=ADMIN)
    assert r.status_code == 200, r.text
    for _ in range(3):
        assert predict(channel, predict_request(x=X)).model_spec.version.value == 1
    oip = triton.InferenceServerClient(address)
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(X)
    for _ in range(2):
        np.testing.assert_array_equal(oip.infer("toy", [tensor]).as_numpy("y"), X)  # stable v1 answers
    oip.close()
    results = wait_until(lambda: (s := _model(client)["shadow_results"]) and s[0]["compared"] == 5 and s, "compared")
    assert (results[0]["shadow_version"], results[0]["max_abs_diff"]) == (2, 1.0)
    assert [t.version for t, _ in fake_backends["tfserving"].requests] == [2] * 5


def test_a_guarded_canary_reached_over_grpc_rolls_back(grpc_client, channel, fake_backends):
    client, _ = grpc_client
    torchserve = fake_backends["torchserve"]
    torchserve.fail = BackendError("torchserve toy v3: worker died (HTTP 500)")
    torchserve.fail_versions = {3}
    r = client.put(
        "/admin/models/toy/traffic",
        json={"canary": 3, "percent": 50, "guard": {"max_error_ratio": 0.2, "min_requests": 5}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    codes = []
    for _ in range(40):
        try:
            predict(channel, predict_request(x=X))
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert grpc.StatusCode.UNKNOWN in codes  # the canary was reached, and failed (502 -> UNKNOWN)
    wait_until(lambda: _model(client)["traffic"]["percent"] == 0.0, "the guard's rollback")
    assert {predict(channel, predict_request(x=X)).model_spec.version.value for _ in range(10)} == {1}


def test_the_grpc_server_stops_with_the_app(grpc_settings, fake_backends):
    address = f"127.0.0.1:{grpc_settings.grpc_port}"
    with TestClient(create_app(grpc_settings, backends=fake_backends)), grpc.insecure_channel(address) as chan:
        assert predict(chan, predict_request(version=2, x=X)).outputs
    with grpc.insecure_channel(address) as chan, pytest.raises(grpc.RpcError) as info:
        predict(chan, predict_request(version=2, x=X), timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_no_grpc_server_when_the_port_is_0(settings, fake_backends):
    assert settings.grpc_port is None  # GATEWAY_GRPC_PORT=0 (tests/conftest.py) turns it off
    assert settings.model_validate({**settings.model_dump(), "grpc_port": ""}).grpc_port is None
    with TestClient(create_app(settings, backends=fake_backends)) as client:
        assert client.get("/v2/health/ready").status_code == 200
