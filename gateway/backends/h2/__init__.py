"""A lean HTTP/2 client for unary gRPC calls on asyncio protocols, for TF Serving's ``Predict``.

``grpc.aio`` spends about twice the CPU of a call made on the event loop's own thread: its
completion queue is polled by a thread that wakes the loop, at the same instruction count
(docs/benchmarks.md, "A lean HTTP/2 call instead of grpc.aio"). This client makes the one hot
call, ``Predict``, on the loop; ``grpc.aio`` keeps every other call (metadata, status, reloads).
A general HTTP/2 library in Python costs more than ``grpc.aio`` (grpclib on ``h2``, measured), so
the framing is written here and only HPACK decoding comes from a library (python-hyper's ``hpack``).

What it does, from RFC 9113 and gRPC's "gRPC over HTTP2" (PROTOCOL-HTTP2.md):

- one connection per target (as ``grpc.aio``'s pick-first channel), many streams on it, at most the
  server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` at once (a call waits for a slot within its deadline);
- requests as HEADERS (HPACK literals, never indexed, so the server's table settings do not
  matter) and DATA within the server's flow-control windows and frame size; a 16 MiB receive
  window per stream and for the connection, given back as it is used;
- answers: response headers and trailers, Trailers-Only, CONTINUATION, padding; ``grpc-status``
  and the percent-decoded ``grpc-message``; a non-200 ``:status`` and RST_STREAM codes mapped to
  gRPC codes as gRPC's specification maps them; one uncompressed message, at most
  ``max_message_bytes`` each way;
- SETTINGS and PING answered; GOAWAY: no new streams, the streams the server did not take fail as
  never processed (``unsent``), the connection closes when its last call ends and the next call
  connects anew; such calls, and those refused with REFUSED_STREAM, are made again at once (up to
  5 times within their deadline), as gRPC's transparent retry does;
- header blocks that leave HPACK's table as it is are decoded once while the table is unchanged;
- the deadline sent as ``grpc-timeout`` and kept locally (RST_STREAM CANCEL past it, or when the
  caller is cancelled); after a call's deadline passes, a PING checks that the server still
  answers, and the connection is dropped when it does not; TCP keepalive for idle connections.

Failures are ``RpcError``, a ``grpc.aio.AioRpcError``, so the adapter's one error table reads them
as it reads ``grpc.aio``'s.
"""

from gateway.backends.h2.channel import Channel
from gateway.backends.h2.wire import RpcError, parse_target

__all__ = ["Channel", "RpcError", "parse_target"]
