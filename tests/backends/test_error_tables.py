"""Lower layers' errors become the gateway's own, in one table per layer."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from gateway.backends.scrub import scrub
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


# --- 5xx answers say which backend failed and how, never where it runs -----------------------
ADDRESSES = ["10.0.3.7", "8080", "8500", "fd00::7", "torchserve:8081", "ipv4:"]


def assert_no_address(text: str) -> None:
    for needle in ADDRESSES:
        assert needle not in text, text


def test_scrub_takes_out_every_kind_of_address():
    text = (
        "Cannot connect to host 10.0.3.7:8080 ssl:default [Connect call failed ('10.0.3.7', 8080)]; "
        "last error: UNKNOWN: ipv4:10.0.3.7:8500: Failed to connect to remote host: Connection refused; "
        "ipv6:[fd00::7]:8500; http://torchserve:8081/models?url=mlp.1.mar; tfserving:8500; fd00::7"
    )
    scrubbed = scrub(text)
    assert_no_address(scrubbed)
    assert "Connection refused" in scrubbed and "Failed to connect to remote host" in scrubbed
    # What carries no address stays as it is.
    assert scrub("input 'x': expected shape [-1, 4], got [2, 5]") == "input 'x': expected shape [-1, 4], got [2, 5]"


def test_a_connect_failure_names_the_kind_not_the_address():
    conn = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("10.0.3.7", 8080, False, False, None, None, None),
        ConnectionRefusedError(111, "Connect call failed ('10.0.3.7', 8080)"),
    )
    err = error_for_exception(conn, "torchserve mlp v1")
    assert (err.status_code, err.message) == (503, "torchserve mlp v1: cannot connect (connection refused)")
    assert "('10.0.3.7', 8080)" in err.detail  # the log's part


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND])
def test_grpc_details_lose_their_peer_addresses(code):
    details = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.3.7:8500: Connection refused"
    err = error_for_rpc(FakeRpcError(code, details), "tfserving mlp v2")
    assert err.status_code >= 500
    assert_no_address(err.message)
    assert err.message.startswith("tfserving mlp v2: ") and "Connection refused" in err.message
    assert "ipv4:10.0.3.7:8500" in err.detail


@pytest.mark.parametrize("status", [500, 503, 504])
def test_torchserve_server_errors_lose_addresses(status):
    body = b'{"code": 500, "message": "Worker died; backend at http://10.0.3.7:9000/ping did not answer"}'
    err = error_for_status(status, body, "torchserve mlp v1")
    assert err.status_code >= 500 and "Worker died" in err.message
    assert_no_address(err.message)
    assert "10.0.3.7:9000" in err.detail


def test_input_errors_keep_the_servers_words():
    """A model's input error is the client's to fix: neither table changes it."""
    words = "input 'x' at 10.0.3.7:1: expected shape [-1, 4]"  # even where it looks like an address
    assert error_for_status(400, words.encode(), "torchserve mlp v1").message.endswith(words)
    assert error_for_rpc(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, words), "tfserving mlp v2").message.endswith(
        words
    )
