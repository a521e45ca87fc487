"""The lean HTTP/2 unary client against a scripted server: the answers a gRPC server may send but
``grpc.aio``'s does not on demand (CONTINUATION, padding, a proxy's HTTP error, a broken answer),
and a server that stops answering altogether."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import grpc
import hpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.backends.h2 import Channel, RpcError
from gateway.backends.h2 import connection as h2connection
from gateway.backends.h2.wire import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PREFACE,
    PUSH_PROMISE,
    SETTINGS,
    frame,
    table_neutral,
)

OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
Script = Callable[[int, hpack.Encoder], bytes]


def message(payload: bytes, compressed: int = 0) -> bytes:
    return bytes((compressed,)) + len(payload).to_bytes(4, "big") + payload


class ScriptedServer:
    """Answers each request's HEADERS with what ``script(stream, encoder)`` gives (nothing: silence)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        encoder = hpack.Encoder()
        try:
            assert await reader.readexactly(len(PREFACE)) == PREFACE
            writer.write(frame(SETTINGS, 0, 0))
            while True:
                head = await reader.readexactly(9)
                length, kind, stream = int.from_bytes(head[:3], "big"), head[3], int.from_bytes(head[5:], "big")
                await reader.readexactly(length)
                if kind == HEADERS:
                    writer.write(self.script(stream, encoder))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def call(script: Script) -> bytes:
    server = ScriptedServer(script)
    port = await server.start()
    channel = Channel("127.0.0.1", port)
    try:
        return await channel.unary("/test.Bytes/echo", b"ping", 5.0)
    finally:
        channel.close()
        await server.stop()


async def test_continuation_and_padding_are_read():
    def script(stream: int, encoder: hpack.Encoder) -> bytes:
        block = encoder.encode([*OK_HEADERS, ("x-filler", "f" * 300)])
        padded = bytes((7,)) + message(b"answer") + b"\x00" * 7
        trailers = encoder.encode([("grpc-status", "0")])
        return (frame(HEADERS, 0, stream, block[:10]) + frame(CONTINUATION, 0, stream, block[10:50])
                + frame(CONTINUATION, END_HEADERS, stream, block[50:]) + frame(DATA, PADDED, stream, padded)
                + frame(HEADERS, END_HEADERS | END_STREAM, stream, trailers))  # fmt: skip

    assert await call(script) == b"answer"


@pytest.mark.parametrize(
    ("status", "code"),
    [("503", grpc.StatusCode.UNAVAILABLE), ("404", grpc.StatusCode.UNIMPLEMENTED), ("418", grpc.StatusCode.UNKNOWN)],
)
async def test_a_proxys_http_error_is_mapped_as_grpc_maps_it(status, code):
    def script(stream: int, encoder: hpack.Encoder) -> bytes:
        block = encoder.encode([(":status", status), ("content-type", "text/plain")])
        return frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, b"no upstream")

    with pytest.raises(RpcError) as caught:
        await call(script)
    assert caught.value.code() == code
    assert f"HTTP status {status}" in caught.value.details()


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        ("no status", grpc.StatusCode.UNKNOWN, "without a grpc-status"),
        ("compressed", grpc.StatusCode.INTERNAL, "compressed message"),
        ("two messages", grpc.StatusCode.INTERNAL, "not exactly one message"),
        ("no trailers", grpc.StatusCode.INTERNAL, "without a gRPC status"),
        ("push", grpc.StatusCode.UNAVAILABLE, "PUSH_PROMISE"),
    ],
)
async def test_a_broken_answer_is_an_error_not_a_hang(answer, code, words):
    def script(stream: int, encoder: hpack.Encoder) -> bytes:
        start = frame(HEADERS, END_HEADERS, stream, encoder.encode(OK_HEADERS))
        end = frame(HEADERS, END_HEADERS | END_STREAM, stream, encoder.encode([("grpc-status", "0")]))
        if answer == "no status":
            return (
                start
                + frame(DATA, 0, stream, message(b"a"))
                + frame(HEADERS, END_HEADERS | END_STREAM, stream, encoder.encode([("x-other", "1")]))
            )
        if answer == "compressed":
            return start + frame(DATA, 0, stream, message(b"a", compressed=1)) + end
        if answer == "two messages":
            return start + frame(DATA, 0, stream, message(b"a") + message(b"b")) + end
        if answer == "no trailers":
            return start + frame(DATA, END_STREAM, stream, message(b"a"))
        return frame(PUSH_PROMISE, END_HEADERS, stream, struct.pack(">I", 2) + encoder.encode(OK_HEADERS))

    with pytest.raises(RpcError) as caught:
        await call(script)
    assert caught.value.code() == code
    assert words in caught.value.details()


async def test_a_server_that_stops_answering_is_dropped_after_a_missed_deadline(monkeypatch):
    monkeypatch.setattr(h2connection, "PING_TIMEOUT", 0.2)
    server = ScriptedServer(lambda stream, encoder: b"")  # reads everything, answers nothing, PINGs neither
    port = await server.start()
    channel = Channel("127.0.0.1", port)
    try:
        with pytest.raises(RpcError) as caught:
            await channel.unary("/test.Bytes/echo", b"ping", 0.2)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first = channel._connection
        assert first is not None and first.usable
        await asyncio.sleep(0.4)  # the PING went unanswered
        assert not first.usable
        with pytest.raises(RpcError):
            await channel.unary("/test.Bytes/echo", b"ping", 0.2)
        assert server.connections == 2  # the second call connected anew
    finally:
        channel.close()
        await server.stop()


async def test_a_cached_header_block_is_read_anew_once_the_table_changed():
    """The same bytes, ``\\xbe`` (the newest entry of HPACK's table), mean ``grpc-status: 0`` in the
    second answer and ``grpc-status: 5`` in the fourth: the client must not answer from its cache."""
    statuses = iter(["0", "0", "5", "5"])
    blocks: list[bytes] = []

    def script(stream: int, encoder: hpack.Encoder) -> bytes:
        start = frame(HEADERS, END_HEADERS, stream, encoder.encode(OK_HEADERS))
        trailers = encoder.encode([("grpc-status", next(statuses))])
        blocks.append(trailers)
        return (
            start + frame(DATA, 0, stream, message(b"a")) + frame(HEADERS, END_HEADERS | END_STREAM, stream, trailers)
        )

    server = ScriptedServer(script)
    port = await server.start()
    channel = Channel("127.0.0.1", port)
    try:
        assert await channel.unary("/test.Bytes/echo", b"", 5.0) == b"a"
        assert await channel.unary("/test.Bytes/echo", b"", 5.0) == b"a"
        for _ in range(2):
            with pytest.raises(RpcError) as caught:
                await channel.unary("/test.Bytes/echo", b"", 5.0)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert blocks[1] == blocks[3] == b"\xbe"  # what the test is about
    finally:
        channel.close()
        await server.stop()


FIELDS = st.lists(
    st.tuples(st.sampled_from(["content-type", "grpc-status", "x-a", ":status"]), st.text("ab05", max_size=3),
              st.booleans()),
    max_size=6,
)  # fmt: skip


@given(st.lists(FIELDS, min_size=1, max_size=6), st.sampled_from([None, 0, 64, 4096]))
def test_table_neutral_says_when_decoding_leaves_the_table_as_it_was(blocks, resize):
    """Never neutral when the table changed (the cache's safety); neutral whenever it did not, but
    for an entry a resized table could not hold (no harm: the cache is only emptied)."""
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    if resize is not None:
        encoder.header_table_size = resize  # the first block starts with a table size update
    for fields in blocks:
        made = [hpack.NeverIndexedHeaderTuple(n, v) if never else (n, v) for n, v, never in fields]
        block = encoder.encode(made, huffman=False)
        table = decoder.header_table
        before = (list(table.dynamic_entries), table.maxsize)
        decoder.decode(block)
        unchanged = before == (list(table.dynamic_entries), table.maxsize)
        if not unchanged:
            assert not table_neutral(block), block
        elif resize is None:
            assert table_neutral(block), block
