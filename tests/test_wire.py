"""The gateway's HTTP/1.1 server protocol (gateway/wire.py): uvicorn's httptools protocol with each
answer that has a length in one write, and every byte on the wire as uvicorn writes it.

Each case runs the same requests through the installed uvicorn's own ``HttpToolsProtocol`` and
through ``JoinedWritesProtocol`` on a transport that records writes, and compares both."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.wire import HeldHead, JoinedWritesProtocol


class Recording(asyncio.Transport):
    """What the protocol writes, write by write; closing is recorded too."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers by path: a fixed body, a chunked stream, an empty 204, a failure after the head."""
    if scope["type"] == "lifespan":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"two", "more_body": False})
        return
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b'{"echo": %d}' % len(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if path == "/fail":
        raise RuntimeError("after the head")
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else answer})


async def exchange(protocol_class: type[HttpToolsProtocol], *requests: bytes) -> Recording:
    """Feed ``requests`` to one connection of ``protocol_class``; the writes once every task ended."""
    config = uvicorn.Config(app, lifespan="off", log_level="critical")
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = Recording()
    protocol.connection_made(transport)
    for request in requests:
        protocol.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0)
            if not state.tasks:
                break
    assert not state.tasks, "the app did not finish"
    protocol.connection_lost(None)
    return transport


POST = b'POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"a":1}'


async def test_an_answer_with_a_length_goes_out_in_one_write_with_the_same_bytes():
    stock = await exchange(HttpToolsProtocol, POST)
    joined = await exchange(JoinedWritesProtocol, POST)
    assert len(stock.writes) == 2  # uvicorn's own: the head, then the body
    assert joined.writes == [b"".join(stock.writes)]
    assert joined.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and joined.writes[0].endswith(b'{"echo": 7}')


async def test_keep_alive_requests_each_get_one_write():
    stock = await exchange(HttpToolsProtocol, POST, POST, POST)
    joined = await exchange(JoinedWritesProtocol, POST, POST, POST)
    assert len(joined.writes) == 3 and b"".join(joined.writes) == b"".join(stock.writes)


async def test_pipelined_requests_keep_their_answers_in_order():
    stock = await exchange(HttpToolsProtocol, POST * 3)
    joined = await exchange(JoinedWritesProtocol, POST * 3)
    assert b"".join(joined.writes) == b"".join(stock.writes) and joined.writes[0].count(b"HTTP/1.1 200") == 1
    assert len(joined.writes) == 3


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", id="chunked stream"),
        pytest.param(b"HEAD /predict HTTP/1.1\r\nhost: x\r\n\r\n", id="HEAD"),
        pytest.param(b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n", id="204"),
        pytest.param(b"GET /predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", id="connection close"),
        pytest.param(b"GET /predict HTTP/1.0\r\nhost: x\r\n\r\n", id="HTTP/1.0"),
        pytest.param(
            b"POST /predict HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n{}",
            id="100-continue",
        ),
    ],
)
async def test_other_answers_are_the_same_bytes_as_uvicorns(request_bytes):
    stock = await exchange(HttpToolsProtocol, request_bytes)
    joined = await exchange(JoinedWritesProtocol, request_bytes)
    assert b"".join(joined.writes) == b"".join(stock.writes) and joined.closed == stock.closed


async def test_a_head_is_not_held_when_no_body_write_follows_it():
    """A chunked stream's head goes out before its first chunk; a HEAD answer's head at once."""
    stream = await exchange(JoinedWritesProtocol, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    assert stream.writes[0].endswith(b"\r\n\r\n") and b"transfer-encoding: chunked" in stream.writes[0]
    head = await exchange(JoinedWritesProtocol, b"HEAD /predict HTTP/1.1\r\nhost: x\r\n\r\n")
    assert len(head.writes) == 1 and head.writes[0].endswith(b"\r\n\r\n")


async def test_an_app_failing_after_the_head_sends_the_head_then_closes_as_uvicorn_does():
    request = b"GET /fail HTTP/1.1\r\nhost: x\r\n\r\n"
    stock = await exchange(HttpToolsProtocol, request)
    joined = await exchange(JoinedWritesProtocol, request)
    assert joined.writes == stock.writes and joined.writes[0].startswith(b"HTTP/1.1 200 OK") and joined.closed


async def test_a_large_body_follows_its_head_without_being_copied_behind_it():
    transport = Recording()
    lines: list[list[bytes]] = []
    transport.writelines = lambda parts: lines.append(list(parts))  # type: ignore[method-assign]
    held = HeldHead(transport, hold=True)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n"
    held.write(head)
    held.write(b"x" * 100_000)
    assert transport.writes == [] and lines == [[head, b"x" * 100_000]]
