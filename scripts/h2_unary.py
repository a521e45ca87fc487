"""A measurement prototype, not a client: one unary gRPC call over HTTP/2 on an asyncio protocol.

``scripts/bench_tfserving_call.py`` uses it to measure how much of the ``grpc.aio`` call's CPU a
lean HTTP/2 client on the event loop would save on TF Serving's ``Predict`` (docs/benchmarks.md).
It does the steps every such call needs and nothing more: the connection preface and SETTINGS
(no server push, no dynamic HPACK table for the server's encoder, 16 MiB receive windows), the
request as one HEADERS frame (HPACK literals, no Huffman) and one DATA frame, the answer's frames
read by length, the header blocks decoded by ``hpack`` (python-hyper's HPACK, the library a real
client would use; optional, the variant says unavailable without it), SETTINGS and PING answered,
the receive window given back, a deadline timer per call. What a client for the gateway would
need besides, and this does not do: sending within the server's flow-control windows and
MAX_FRAME_SIZE (the ``mlp`` request fits the initial ones), GOAWAY, RST_STREAM, stream limits,
reconnecting, keepalive, ``grpc-message`` decoding and the status-code mapping.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from typing import Any

try:
    import hpack
except ImportError:  # pragma: no cover - depends on the environment
    hpack = None  # type: ignore[assignment]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x6, 0x8
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
WINDOW = 1 << 24


def available() -> bool:
    """Whether ``hpack`` is installed."""
    return hpack is not None


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal field without indexing, new name, no Huffman (RFC 7541 6.2.2); < 127 bytes each."""
    return b"\x00" + bytes((len(name),)) + name + bytes((len(value),)) + value


class CallFailed(Exception):
    """The call ended without ``grpc-status: 0``, or the connection went away."""


class H2Unary(asyncio.Protocol):
    """One HTTP/2 connection carrying unary gRPC calls (see the module's docstring for what it lacks)."""

    def __init__(self, authority: str) -> None:
        if hpack is None:
            raise RuntimeError("hpack is not installed (pip install hpack)")
        self.authority = authority.encode()
        self.decoder = hpack.Decoder()
        self.buffer = bytearray()
        self.calls: dict[int, tuple[asyncio.Future[bytes], bytearray]] = {}
        self.next_stream = 1
        self.unacknowledged = 0
        self.transport: Any = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        settings = struct.pack(">HIHIHI", 0x1, 0, 0x2, 0, 0x4, WINDOW)  # table size 0, no push, window
        transport.write(
            PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - 65535))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        for future, _ in self.calls.values():
            if not future.done():
                future.set_exception(CallFailed(f"connection lost: {exc}"))
        self.calls.clear()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at, end, replies = 0, len(buffer), []
        while end - at >= 9:
            length = int.from_bytes(buffer[at : at + 3], "big")
            stop = at + 9 + length
            if stop > end:
                break
            kind, flags = buffer[at + 3], buffer[at + 4]
            stream = int.from_bytes(buffer[at + 5 : at + 9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[at + 9 : stop])
            at = stop
            if kind in (DATA, HEADERS) and flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if kind == DATA:
                self.unacknowledged += length
                call = self.calls.get(stream)
                if call is not None:
                    call[1].extend(payload)
                    if flags & END_STREAM:
                        self._fail(stream, "the answer ended without trailers")
            elif kind == HEADERS:
                if flags & PRIORITY:
                    payload = payload[5:]
                fields = self.decoder.decode(payload, raw=True)  # every block, to keep HPACK in step
                if flags & END_STREAM:
                    self._end(stream, fields)
            elif kind == SETTINGS and not flags & ACK:
                replies.append(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                replies.append(frame(PING, ACK, 0, payload))
        del buffer[:at]
        if self.unacknowledged > WINDOW // 2:
            replies.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacknowledged)))
            self.unacknowledged = 0
        if replies:
            self.transport.write(b"".join(replies))

    def _end(self, stream: int, trailers: Iterable[Any]) -> None:
        call = self.calls.pop(stream, None)
        if call is None or call[0].done():
            return
        status = next((v for k, v in trailers if k == b"grpc-status"), None)
        if status != b"0":
            call[0].set_exception(CallFailed(f"grpc-status {status!r}"))
        else:
            call[0].set_result(bytes(call[1][5:]))  # one message: past its 5-byte prefix

    def _fail(self, stream: int, why: str) -> None:
        call = self.calls.pop(stream, None)
        if call is not None and not call[0].done():
            call[0].set_exception(CallFailed(why))

    async def call(self, path: str, message: bytes, deadline_s: float) -> bytes:
        """The answer's message bytes, or ``CallFailed`` (past ``deadline_s`` too)."""
        stream, self.next_stream = self.next_stream, self.next_stream + 2
        block = (
            b"\x83\x86"  # :method POST, :scheme http (static table 3, 6)
            + b"\x04" + bytes((len(path),)) + path.encode()  # :path, name from the static table
            + b"\x01" + bytes((len(self.authority),)) + self.authority  # :authority
            + literal(b"content-type", b"application/grpc")
            + literal(b"te", b"trailers")
            + literal(b"grpc-timeout", b"%dm" % int(deadline_s * 1000))
        )  # fmt: skip
        future: asyncio.Future[bytes] = self.loop.create_future()
        self.calls[stream] = (future, bytearray())
        body = b"\x00" + len(message).to_bytes(4, "big") + message
        self.transport.write(frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, body))
        timer = self.loop.call_later(deadline_s, self._fail, stream, "deadline exceeded")
        try:
            return await future
        finally:
            timer.cancel()


async def connect(host: str, port: int) -> H2Unary:
    _, protocol = await asyncio.get_running_loop().create_connection(lambda: H2Unary(f"{host}:{port}"), host, port)
    return protocol
