"""One HTTP/2 connection carrying unary gRPC calls (see the package's docstring for what it does)."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from typing import Any, Final
from urllib.parse import unquote

import hpack

from gateway.backends.h2.wire import (
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    GRPC_CODES,
    HEADERS,
    HTTP_CODES,
    LAST_STREAM,
    MAX_FRAME,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RESET_CODES,
    RST_STREAM,
    SETTINGS,
    WINDOW,
    WINDOW_UPDATE,
    Call,
    Code,
    ProtocolError,
    RpcError,
    frame,
    frame_head,
    grpc_timeout,
    hpack_literal,
    hpack_string,
    table_neutral,
    tcp_keepalive,
)  # fmt: skip

#: How long a PING sent after a missed deadline may go unanswered before the connection is dropped.
PING_TIMEOUT: Final = 10.0
LIVENESS: Final = b"gw-alive"


class Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying unary calls."""

    def __init__(self, authority: str, max_message: int) -> None:
        self.authority = authority
        self.max_message = max_message
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.decoder = hpack.Decoder()
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.calls: dict[int, Call] = {}
        self.next_stream = 1
        self.peer_window, self.peer_frame, self.peer_streams = 65535, 16384, 1 << 31  # RFC defaults
        self.window = 65535  # what the connection may still send
        self.unacked = 0
        self.continuing: tuple[int, int, bytearray] | None = None
        self.window_waiters: list[asyncio.Future[None]] = []
        self.slot_waiters: deque[asyncio.Future[None]] = deque()
        self.closed = self.draining = False
        self.ping_timer: asyncio.TimerHandle | None = None
        self.heads: dict[str, bytes] = {}
        #: Header blocks that leave HPACK's table as it is, decoded, while the table stays unchanged
        #: (a server repeats the same few indexed blocks: ``:status 200``, ``grpc-status 0``).
        self.decoded: dict[bytes, Any] = {}

    @property
    def usable(self) -> bool:
        return not self.closed and not self.draining

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        tcp_keepalive(transport.get_extra_info("socket"))
        # No push; a 16 MiB initial stream window; frames up to 1 MiB.
        settings = struct.pack(">HIHIHI", 0x2, 0, 0x4, WINDOW, 0x5, MAX_FRAME)
        transport.write(PREFACE + frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, (WINDOW - 65535).to_bytes(4, "big")))  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        why = f"the connection to {self.authority} was lost ({exc or 'closed by the server'})"
        for stream in list(self.calls):
            self._fail(stream, RpcError(Code.UNAVAILABLE, why))
        self._wake(self.window_waiters)
        self._wake(self.slot_waiters)
        if self.ping_timer is not None:
            self.ping_timer.cancel()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        at, end = 0, len(buffer)
        try:
            while end - at >= 9:
                length = int.from_bytes(buffer[at : at + 3], "big")
                if length > MAX_FRAME:
                    raise ProtocolError(f"a frame of {length} bytes, over the {MAX_FRAME} allowed")
                stop = at + 9 + length
                if stop > end:
                    break
                kind, flags = buffer[at + 3], buffer[at + 4]
                stream = int.from_bytes(buffer[at + 5 : at + 9], "big") & LAST_STREAM
                payload = bytes(buffer[at + 9 : stop])
                at = stop
                self._frame(kind, flags, stream, payload)
        except (ProtocolError, hpack.HPACKError, ValueError, IndexError) as exc:
            self.abort(f"protocol error from the server: {exc}")
            return
        del buffer[:at]
        if self.unacked > WINDOW // 2:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, self.unacked.to_bytes(4, "big")))
            self.unacked = 0
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out.clear()

    # frames
    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise ProtocolError("a header block was not continued")
        if kind == DATA:
            self.unacked += len(payload)  # padding included (RFC 9113 6.9.1)
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            self._data(stream, flags, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._headers(stream, flags, payload)
            else:
                self.continuing = (stream, flags, bytearray(payload))
        elif kind == CONTINUATION:
            if self.continuing is None or self.continuing[0] != stream:
                raise ProtocolError("CONTINUATION without its HEADERS")
            self.continuing[2].extend(payload)
            if flags & END_HEADERS:
                stream, flags, block = self.continuing
                self.continuing = None
                self._headers(stream, flags, bytes(block))
        elif kind == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            self._fail(stream, RpcError(RESET_CODES.get(code, Code.INTERNAL), f"the server reset the stream (HTTP/2 "
                                        f"error {code})", unsent=code == REFUSED_STREAM))  # fmt: skip
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                self.out.append(frame(SETTINGS, ACK, 0))
        elif kind == PING:
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
            elif payload == LIVENESS and self.ping_timer is not None:
                self.ping_timer.cancel()
                self.ping_timer = None
        elif kind == GOAWAY:
            self._goaway(int.from_bytes(payload[:4], "big") & LAST_STREAM, int.from_bytes(payload[4:8], "big"))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & LAST_STREAM
            if stream == 0:
                self.window += increment
            elif (call := self.calls.get(stream)) is not None:
                call.window += increment
            self._wake(self.window_waiters)
        elif kind == PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE, which this client disabled")
        # PRIORITY and unknown frame types are ignored (RFC 9113 4.1, 5.5).

    def _data(self, stream: int, flags: int, payload: bytes) -> None:
        call = self.calls.get(stream)
        if call is None:
            return
        call.data += payload
        if len(call.data) > self.max_message + 5:
            error = f"Received message larger than max ({len(call.data) - 5} vs. {self.max_message})"
            self._fail(stream, RpcError(Code.RESOURCE_EXHAUSTED, error), reset=CANCEL)
        elif flags & END_STREAM:
            self._fail(stream, RpcError(Code.INTERNAL, "the server ended the answer without a gRPC status"))
        else:
            call.unacked += len(payload)
            if call.unacked > WINDOW // 2:
                self.out.append(frame(WINDOW_UPDATE, 0, stream, call.unacked.to_bytes(4, "big")))
                call.unacked = 0

    def _headers(self, stream: int, flags: int, block: bytes) -> None:
        fields = self.decoded.get(block)
        if fields is None:  # every other block is decoded, to keep HPACK's table in step
            fields = self.decoder.decode(block, raw=True)
            if not table_neutral(block):
                self.decoded.clear()  # the table changed: what the blocks seen so far mean may too
            elif len(self.decoded) < 64:
                self.decoded[block] = fields
        call = self.calls.get(stream)
        if call is None:
            return
        ended = flags & END_STREAM
        if not call.responded:
            call.responded = True
            status = next((value for name, value in fields if name == b":status"), b"")
            if status != b"200":
                code = HTTP_CODES.get(int(status), Code.UNKNOWN) if status.isdigit() else Code.UNKNOWN
                error = RpcError(code, f"the server answered HTTP status {status.decode('latin-1') or 'none'}")
                self._fail(stream, error, reset=None if ended else CANCEL)
                return
            if not ended:
                return  # the response headers; the trailers end the answer
        elif not ended:
            self._fail(stream, RpcError(Code.INTERNAL, "trailers that do not end the stream"), reset=CANCEL)
            return
        self._end(stream, call, fields)

    def _end(self, stream: int, call: Call, trailers: Any) -> None:
        status, message = None, b""
        for name, value in trailers:
            if name == b"grpc-status":
                status = value
            elif name == b"grpc-message":
                message = value
        if status is None or not status.isdigit():
            self._fail(stream, RpcError(Code.UNKNOWN, "the answer ended without a grpc-status"))
            return
        if status != b"0":
            details = unquote(message.decode("latin-1"), errors="replace")  # percent-encoded UTF-8
            self._fail(stream, RpcError(GRPC_CODES.get(int(status), Code.UNKNOWN), details))
            return
        data = call.data
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            what = "a compressed message" if data[:1] == b"\x01" else "not exactly one message"
            self._fail(stream, RpcError(Code.INTERNAL, f"the answer holds {what}"))
            return
        del self.calls[stream]
        if not call.future.done():
            call.future.set_result(bytes(memoryview(data)[5:]))
        self._released()

    def _settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - len(payload) % 6, 6):
            ident, value = struct.unpack_from(">HI", payload, at)
            if ident == 0x3:
                self.peer_streams = value
                self._wake(self.slot_waiters)
            elif ident == 0x4:
                if value > LAST_STREAM:
                    raise ProtocolError(f"an initial window of {value}")
                for call in self.calls.values():
                    call.window += value - self.peer_window
                self.peer_window = value
                self._wake(self.window_waiters)
            elif ident == 0x5:
                if not 16384 <= value < 1 << 24:
                    raise ProtocolError(f"a frame size of {value}")
                self.peer_frame = value

    def _goaway(self, last: int, code: int) -> None:
        self.draining = True
        why = f"the server is closing the connection (GOAWAY, HTTP/2 error {code}); the call was not processed"
        for stream in [s for s in self.calls if s > last]:
            self._fail(stream, RpcError(Code.UNAVAILABLE, why, unsent=True))
        self._wake(self.slot_waiters)
        if not self.calls:
            self.transport.close()

    # calls
    def _fail(self, stream: int, error: RpcError, reset: int | None = None) -> None:
        call = self.calls.pop(stream, None)
        if call is None:
            return
        if reset is not None and not self.closed:
            self.out.append(frame(RST_STREAM, 0, stream, reset.to_bytes(4, "big")))
        if not call.future.done():
            call.future.set_exception(error)
        self._released()

    def _released(self) -> None:
        if self.slot_waiters:
            waiter = self.slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self.draining and not self.calls and not self.closed:
            self.transport.close()

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]] | deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.pop()
            if not waiter.done():
                waiter.set_result(None)

    def _flush(self) -> None:
        if self.out and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def _expired(self, stream: int) -> None:
        if stream not in self.calls:
            return
        self._fail(stream, RpcError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"), reset=CANCEL)
        if self.ping_timer is None and not self.closed:  # is the server still there?
            self.out.append(frame(PING, 0, 0, LIVENESS))
            self.ping_timer = self.loop.call_later(PING_TIMEOUT, self.abort, "no answer to a PING")
        self._flush()

    def abort(self, why: str) -> None:
        """End the connection (GOAWAY, then closed); its calls fail as UNAVAILABLE."""
        if not self.closed:
            last = (self.next_stream - 2) & LAST_STREAM
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", last, PROTOCOL_ERROR) + why.encode()[:200]))
            self.transport.abort()
        self.closed = True
        for stream in list(self.calls):
            self._fail(stream, RpcError(Code.UNAVAILABLE, f"the connection to {self.authority} was dropped: {why}"))

    def close(self) -> None:
        if not self.closed:
            self.transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR)))
            self.transport.close()
        self.closed = True

    async def wait_slot(self) -> None:
        waiter = self.loop.create_future()
        self.slot_waiters.append(waiter)
        await waiter

    def _head(self, path: str) -> bytes:
        head = (b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
                + hpack_literal(4, path.encode()) + hpack_literal(1, self.authority.encode())  # :path, :authority
                + hpack_literal(b"content-type", b"application/grpc") + hpack_literal(b"te", b"trailers")
                + hpack_literal(b"user-agent", b"model-gateway-h2unary"))  # fmt: skip
        self.heads[path] = head
        return head

    async def unary(self, path: str, message: bytes, deadline: float) -> bytes:
        """One call on a new stream; ``deadline`` is a ``loop.time()`` instant."""
        stream = self.next_stream
        self.next_stream += 2
        if self.next_stream > LAST_STREAM:
            self.draining = True  # stream IDs used up: the next call opens a new connection
        block = (
            (self.heads.get(path) or self._head(path))
            + b"\x00\x0cgrpc-timeout"
            + hpack_string(grpc_timeout(deadline - self.loop.time()))
        )
        body = b"\x00" + len(message).to_bytes(4, "big") + message
        call = Call(self.loop.create_future(), self.peer_window)
        self.calls[stream] = call
        timer = self.loop.call_at(deadline, self._expired, stream)
        size = len(body)
        try:
            if size <= self.window and size <= call.window and size <= self.peer_frame:
                self.window -= size
                call.window -= size
                self.transport.write(frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, END_STREAM, stream, body))
            else:
                self.transport.write(frame(HEADERS, END_HEADERS, stream, block))
                await self._send(stream, call, memoryview(body))
            return await call.future
        except asyncio.CancelledError:  # the caller went away: the server stops too
            self._fail(stream, RpcError(Code.CANCELLED, "Cancelled"), reset=CANCEL)
            self._flush()
            raise
        finally:
            timer.cancel()

    async def _send(self, stream: int, call: Call, body: memoryview) -> None:
        """DATA frames within the server's windows and frame size."""
        at, size = 0, len(body)
        while at < size and not call.future.done() and not self.closed:
            n = min(size - at, self.peer_frame, self.window, call.window)
            if n <= 0:
                waiter = self.loop.create_future()
                self.window_waiters.append(waiter)
                await asyncio.wait((waiter, call.future), return_when=asyncio.FIRST_COMPLETED)
                continue
            self.window -= n
            call.window -= n
            head = frame_head(n, DATA, END_STREAM if at + n == size else 0, stream)
            self.transport.writelines((head, body[at : at + n]))
            at += n
