"""Lower layers' errors become the gateway's own, in one table per layer."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from gateway.backends.tfserving.client import error_for_rpc
from gateway.backends.torchserve import error_for_exception, error_for_status


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.NOT_FOUND, 502),
        (grpc.StatusCode.INTERNAL, 502),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    ],
)
def test_grpc_codes(code, status):
    err = error_for_rpc(FakeRpcError(code, "the server's words"), "tfserving mlp v2")
    assert err.status_code == status
    if status != 504:
        assert "the server's words" in err.message
    assert "tfserving mlp v2" in err.message


@pytest.mark.parametrize(
    ("status", "gateway_status"),
    [(400, 400), (404, 502), (500, 502), (503, 503), (507, 503), (504, 504)],
)
def test_torchserve_statuses(status, gateway_status):
    err = error_for_status(status, b'{"code": 1, "message": "worker died"}', "torchserve mlp v1")
    assert err.status_code == gateway_status
    assert "worker died" in err.message


def test_handler_error_body_is_used():
    err = error_for_status(400, b'{"error": "input \'x\': expected shape [-1, 4]"}', "torchserve mlp v1")
    assert err.message == "input rejected by torchserve mlp v1: input 'x': expected shape [-1, 4]"


def test_http_client_exceptions():
    assert error_for_exception(TimeoutError(), "ts").status_code == 504
    assert error_for_exception(aiohttp.ServerDisconnectedError(), "ts").status_code == 503
    conn = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, False, None, None, None),
        OSError(111, "Connection refused"),
    )
    err = error_for_exception(conn, "ts")
    assert err.status_code == 503 and "cannot connect" in err.message
    assert error_for_exception(aiohttp.ClientPayloadError("bad"), "ts").status_code == 502
