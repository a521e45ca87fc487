"""The lean HTTP/2 unary client (gateway/backends/h2) against a real gRPC server: ``grpc.aio``'s,
whose HTTP/2 transport is gRPC's C core, the transport of TF Serving's own server.

The server's methods take and give raw bytes; each test names what it proves: answers, status
codes and messages, deadlines both ways, cancellation reaching the server, flow control both
ways past the initial windows, the server's stream limit, its GOAWAY, its going away mid-call.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from pydantic import ValidationError

from gateway.app import make_backends, replica_adapters
from gateway.backends.h2 import Channel, RpcError, parse_target
from gateway.backends.h2.wire import grpc_timeout, hpack_integer
from gateway.settings import Settings

SERVICE = "/test.Bytes/"


class Backend:
    """The test server's methods, and what it saw."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.remaining: list[float | None] = []
        self.peers: set[str] = set()

    async def echo(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.peers.add(context.peer())
        return request

    async def fail(self, request: bytes, context: aio.ServicerContext) -> bytes:
        code, _, message = request.decode().partition(":")
        await context.abort(grpc.StatusCode[code], message)
        raise AssertionError("abort returns no answer")

    async def slow(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.remaining.append(context.time_remaining())
        self.started.set()
        try:
            await asyncio.sleep(float(request))
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b"late"

    async def big(self, request: bytes, context: aio.ServicerContext) -> bytes:
        return b"x" * int(request)

    async def length(self, request: bytes, context: aio.ServicerContext) -> bytes:
        return str(len(request)).encode()


async def serve(backend: Backend, *options: tuple[str, int], port: int = 0) -> tuple[aio.Server, int]:
    methods = {
        name: grpc.unary_unary_rpc_method_handler(getattr(backend, name))
        for name in ("echo", "fail", "slow", "big", "length")
    }
    server = aio.server(options=[("grpc.max_receive_message_length", 64 << 20), *options])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Bytes", methods),))
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


@pytest.fixture
async def backend() -> AsyncIterator[tuple[Backend, Channel]]:
    methods = Backend()
    server, port = await serve(methods)
    channel = Channel("127.0.0.1", port)
    yield methods, channel
    channel.close()
    await server.stop(None)


async def test_answers_come_back_byte_for_byte(backend):
    _, channel = backend
    assert await channel.unary(SERVICE + "echo", b"hello", 5.0) == b"hello"
    assert await channel.unary(SERVICE + "echo", b"", 5.0) == b""
    answers = await asyncio.gather(*(channel.unary(SERVICE + "echo", b"%d" % i, 5.0) for i in range(50)))
    assert answers == [b"%d" % i for i in range(50)]


async def test_calls_share_one_connection(backend):
    methods, channel = backend
    for _ in range(5):
        await channel.unary(SERVICE + "echo", b"x", 5.0)
    await asyncio.gather(*(channel.unary(SERVICE + "echo", b"x", 5.0) for _ in range(20)))
    assert len(methods.peers) == 1, methods.peers


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("NOT_FOUND", "Servable not found for request: Specific(mlp, 7)"),
        ("INVALID_ARGUMENT", "input size does not match signature: 3!=4 for tensor x"),
        ("RESOURCE_EXHAUSTED", "too many"),
        ("FAILED_PRECONDITION", "üñíçødé, 100% and a newline\nin it"),
        ("INTERNAL", ""),
    ],
)
async def test_status_codes_and_messages_arrive_as_the_server_sent_them(backend, code, message):
    _, channel = backend
    with pytest.raises(RpcError) as caught:
        await channel.unary(SERVICE + "fail", f"{code}:{message}".encode(), 5.0)
    assert caught.value.code() == grpc.StatusCode[code]
    assert caught.value.details() == message
    assert not caught.value.unsent
    assert await channel.unary(SERVICE + "echo", b"after", 5.0) == b"after"  # the connection goes on


async def test_an_unknown_method_is_unimplemented(backend):
    _, channel = backend
    with pytest.raises(RpcError) as caught:
        await channel.unary("/test.Bytes/nothing", b"", 5.0)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_deadline_reaches_the_server_and_holds_locally(backend):
    methods, channel = backend
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RpcError) as caught:
        await channel.unary(SERVICE + "slow", b"5", 0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert loop.time() - started < 1.0
    assert methods.remaining and 0 < methods.remaining[0] <= 0.3  # sent as grpc-timeout
    await asyncio.wait_for(methods.cancelled.wait(), 5.0)  # the server stopped working on it
    assert await channel.unary(SERVICE + "echo", b"after", 5.0) == b"after"


async def test_a_cancelled_caller_cancels_the_call_on_the_server(backend):
    methods, channel = backend
    task = asyncio.create_task(channel.unary(SERVICE + "slow", b"10", 30.0))
    await asyncio.wait_for(methods.started.wait(), 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(methods.cancelled.wait(), 5.0)
    assert await channel.unary(SERVICE + "echo", b"after", 5.0) == b"after"


@pytest.mark.parametrize("size", [70_000, 5 << 20, 20 << 20])
async def test_large_answers_pass_the_receive_windows(backend, size):
    _, channel = backend
    answer = await channel.unary(SERVICE + "big", str(size).encode(), 30.0)
    assert answer == b"x" * size


@pytest.mark.parametrize("size", [70_000, 5 << 20, 20 << 20])
async def test_large_requests_are_sent_within_the_servers_windows(backend, size):
    _, channel = backend
    assert await channel.unary(SERVICE + "length", b"y" * size, 30.0) == str(size).encode()


async def test_messages_over_the_limit_fail_without_harm(backend):
    methods, _ = backend
    server, port = await serve(methods)
    small = Channel("127.0.0.1", port, max_message_bytes=1000)
    try:
        with pytest.raises(RpcError) as caught:
            await small.unary(SERVICE + "echo", b"z" * 1001, 5.0)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Sent message larger than max (1001 vs. 1000)" in caught.value.details()
        with pytest.raises(RpcError) as caught:
            await small.unary(SERVICE + "big", b"5000", 5.0)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Received message larger than max" in caught.value.details()
        assert await small.unary(SERVICE + "big", b"1000", 5.0) == b"x" * 1000
    finally:
        small.close()
        await server.stop(None)


async def test_the_servers_stream_limit_queues_calls():
    methods = Backend()
    server, port = await serve(methods, ("grpc.max_concurrent_streams", 2))
    channel = Channel("127.0.0.1", port)
    try:
        await channel.unary(SERVICE + "echo", b"", 5.0)  # the server's SETTINGS arrive
        answers = await asyncio.gather(*(channel.unary(SERVICE + "slow", b"0.05", 10.0) for _ in range(8)))
        assert answers == [b"late"] * 8
        assert len(methods.peers) == 1
    finally:
        channel.close()
        await server.stop(None)


async def test_goaway_from_the_server_moves_calls_to_a_new_connection():
    methods = Backend()
    server, port = await serve(methods, ("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 5000))
    channel = Channel("127.0.0.1", port)
    try:
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.0
        while loop.time() < until:
            answers = await asyncio.gather(*(channel.unary(SERVICE + "echo", b"k", 5.0) for _ in range(4)))
            assert answers == [b"k"] * 4
        assert len(methods.peers) >= 3, methods.peers  # connections aged out, and calls went on
    finally:
        channel.close()
        await server.stop(None)


async def test_a_server_gone_mid_call_fails_it_as_unavailable_and_the_next_call_reconnects():
    methods = Backend()
    server, port = await serve(methods)
    channel = Channel("127.0.0.1", port)
    try:
        task = asyncio.create_task(channel.unary(SERVICE + "slow", b"10", 30.0))
        await asyncio.wait_for(methods.started.wait(), 5.0)
        await server.stop(None)
        with pytest.raises(RpcError) as caught:
            await task
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        with pytest.raises(RpcError) as caught:
            await channel.unary(SERVICE + "echo", b"", 5.0)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and caught.value.unsent
        assert f"127.0.0.1:{port}" in caught.value.details()
        server, _ = await serve(methods, port=port)  # back at the same address
        assert await channel.unary(SERVICE + "echo", b"again", 5.0) == b"again"
    finally:
        channel.close()
        await server.stop(None)


async def test_nothing_listening_is_unavailable_and_unsent():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = Channel("127.0.0.1", port)
    with pytest.raises(RpcError) as caught:
        await channel.unary(SERVICE + "echo", b"", 5.0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.unsent and "connect" in caught.value.details()


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("127.0.0.1:8500", ("127.0.0.1", 8500)),
        ("tfserving:8500", ("tfserving", 8500)),
        ("dns:///tfserving.models.svc:8500", ("tfserving.models.svc", 8500)),
        ("ipv4:10.0.0.7:8500", ("10.0.0.7", 8500)),
        ("[::1]:8500", ("::1", 8500)),
        ("ipv6:[::1]:8500", ("::1", 8500)),
        ("unix:/run/tfs.sock", None),
        ("ipv4:10.0.0.7:8500,10.0.0.8:8500", None),
        ("dns://8.8.8.8/tfserving:8500", None),
        ("tfserving", None),
        ("::1:8500", None),
    ],
)
def test_targets_the_client_takes_and_those_left_to_grpc(target, parsed):
    assert parse_target(target) == parsed


def test_grpc_timeout_stays_within_eight_digits():
    assert grpc_timeout(0.0001) == b"1m"
    assert grpc_timeout(30.0) == b"30000m"
    assert grpc_timeout(1e9) == b"99999999S"
    assert len(grpc_timeout(99_999.9999)) <= 9


@pytest.mark.parametrize(
    ("value", "prefix", "encoded"), [(10, 5, b"\x0a"), (1337, 5, b"\x1f\x9a\x0a"), (42, 8, b"\x2a")]
)
def test_hpack_integers_as_rfc_7541_gives_them(value, prefix, encoded):
    assert hpack_integer(value, prefix) == encoded  # RFC 7541 C.1.1-C.1.3


@pytest.mark.parametrize(("value", "over_http2"), [(None, True), ("http2", True), ("grpc", False)])
async def test_the_predict_client_setting_reaches_every_tfserving_adapter(monkeypatch, value, over_http2):
    if value is not None:
        monkeypatch.setenv("GATEWAY_TFSERVING_PREDICT_CLIENT", value)
    settings = Settings(_env_file=None)
    adapters = [make_backends(settings)["tfserving"], replica_adapters(settings)("tfserving", "grpc://127.0.0.1:8500")]
    for adapter in adapters:
        await adapter.start()  # no connection is made before the first call
        try:
            assert (adapter._h2 is not None) is over_http2
        finally:
            await adapter.close()


def test_a_wrong_predict_client_is_named(monkeypatch):
    monkeypatch.setenv("GATEWAY_TFSERVING_PREDICT_CLIENT", "h3")
    with pytest.raises(ValidationError, match="tfserving_predict_client"):
        Settings(_env_file=None)
