"""HTTP/2 and gRPC wire facts for the lean unary client: frame types and flags, the HPACK literals
it sends, ``grpc-timeout``, the status mappings of gRPC's specification, its error, and the state
of one call on a stream."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Final

import grpc

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY_FRAME, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
#: HTTP/2 error codes sent here (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, CANCEL = 0x0, 0x1, 0x8
REFUSED_STREAM = 0x7

#: The receive window, per stream and for the connection, and the largest frame taken.
WINDOW: Final = 1 << 24
MAX_FRAME: Final = 1 << 20
#: The last stream ID a client may open (RFC 9113 5.1.1); past it a new connection is made.
LAST_STREAM: Final = (1 << 31) - 1

Code = grpc.StatusCode
GRPC_CODES: Final = {code.value[0]: code for code in Code}
#: RST_STREAM and GOAWAY codes -> gRPC codes (PROTOCOL-HTTP2.md, "Errors"); the rest are INTERNAL.
RESET_CODES: Final = {REFUSED_STREAM: Code.UNAVAILABLE, CANCEL: Code.CANCELLED, 0xB: Code.RESOURCE_EXHAUSTED,
                      0xC: Code.PERMISSION_DENIED}  # fmt: skip
#: HTTP statuses of a non-gRPC answer -> gRPC codes (gRPC's http-grpc-status-mapping.md); others UNKNOWN.
HTTP_CODES: Final = {400: Code.INTERNAL, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
                     404: Code.UNIMPLEMENTED, 429: Code.UNAVAILABLE, 502: Code.UNAVAILABLE, 503: Code.UNAVAILABLE,
                     504: Code.UNAVAILABLE}  # fmt: skip


class RpcError(grpc.aio.AioRpcError):  # type: ignore[misc]  # grpc has no type hints
    """A failed call, as ``grpc.aio`` reports one; ``unsent``: the server never processed it."""

    def __init__(self, code: grpc.StatusCode, details: str, *, unsent: bool = False) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
        self.unsent = unsent


class ProtocolError(Exception):
    """The server broke HTTP/2: the connection ends (GOAWAY PROTOCOL_ERROR)."""


def frame_head(length: int, kind: int, flags: int, stream: int) -> bytes:
    """A frame's 9-byte header (RFC 9113 4.1)."""
    return length.to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big")


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return frame_head(len(payload), kind, flags, stream) + payload


def hpack_integer(value: int, prefix: int, first: int = 0) -> bytes:
    """An HPACK integer with a ``prefix``-bit prefix (RFC 7541 5.1), ``first`` in the high bits."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((first | value,))
    out, value = bytearray((first | limit,)), value - limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(value: bytes) -> bytes:
    return hpack_integer(len(value), 7) + value  # no Huffman coding


def hpack_literal(name: bytes | int, value: bytes) -> bytes:
    """A literal field without indexing (RFC 7541 6.2.2): a static-table name index, or a new name."""
    if isinstance(name, int):
        return hpack_integer(name, 4) + hpack_string(value)
    return b"\x00" + hpack_string(name) + hpack_string(value)


def _read_integer(block: bytes, at: int, prefix: int) -> tuple[int, int]:
    """An HPACK integer at ``block[at]`` (RFC 7541 5.1): its value, and where the next field starts."""
    limit = (1 << prefix) - 1
    value, at = block[at] & limit, at + 1
    if value < limit:
        return value, at
    shift = 0
    while True:
        byte, at = block[at], at + 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def table_neutral(block: bytes) -> bool:
    """Whether decoding ``block`` leaves HPACK's dynamic table as it is: only indexed fields and
    literals without or never indexing (RFC 7541 6.1, 6.2.2, 6.2.3), no incremental indexing, no
    table size update. ``block`` is one that decoded."""
    at, end = 0, len(block)
    while at < end:
        first = block[at]
        if first & 0x80:  # indexed
            at = _read_integer(block, at, 7)[1]
        elif first & 0xE0:  # incremental indexing (01xxxxxx) or a size update (001xxxxx)
            return False
        else:
            name, at = _read_integer(block, at, 4)
            for _ in range(1 if name else 2):  # the name's string when it is not indexed, the value's
                length, at = _read_integer(block, at, 7)
                at += length
    return True


def grpc_timeout(seconds: float) -> bytes:
    """The ``grpc-timeout`` value: at most 8 digits, in milliseconds, or seconds when longer."""
    millis = max(1, math.ceil(seconds * 1000))
    return b"%dm" % millis if millis < 10**8 else b"%dS" % min(math.ceil(seconds), 10**8 - 1)


def parse_target(target: str) -> tuple[str, int] | None:
    """``host:port``, ``[v6]:port``, ``dns:///host:port`` or ``ipv4:``/``ipv6:`` one address: (host,
    port); None for what only ``grpc.aio`` resolves (unix sockets, address lists, other schemes)."""
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        target = target.removeprefix(scheme)
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "," in target or "/" in target or not host:
        return None
    if host.startswith("["):
        return (host[1:-1], int(port)) if host.endswith("]") else None
    return None if ":" in host else (host, int(port))


def tcp_keepalive(sock: socket.socket | None) -> None:
    """TCP keepalive on a connection's socket, so a dead peer of an idle connection is noticed."""
    if sock is None or not hasattr(socket, "TCP_KEEPIDLE"):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in ((socket.TCP_KEEPIDLE, 30), (socket.TCP_KEEPINTVL, 10), (socket.TCP_KEEPCNT, 3)):
        sock.setsockopt(socket.IPPROTO_TCP, option, value)


class Call:
    """One call's stream: its answer to come, the bytes so far, and its flow-control windows."""

    __slots__ = ("data", "future", "responded", "unacked", "window")

    def __init__(self, future: asyncio.Future[bytes], window: int) -> None:
        self.future = future
        self.data = bytearray()
        self.responded = False
        self.unacked = 0
        self.window = window  # what this stream may still send
