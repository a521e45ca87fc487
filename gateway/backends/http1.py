"""A lean pooled HTTP/1.1 client on asyncio protocols, for the inference calls to TorchServe.

Only what the data path needs: ``POST`` of a body of known length on keep-alive connections (the
most recently used first), the answer's status, content type and body (``Content-Length`` or
chunked, parsed by httptools, uvicorn's own parser); no redirects, cookies, proxies or
decompression. Measured against aiohttp on the same calls (``scripts/bench_http_client.py``,
docs/benchmarks.md), it costs a fraction of aiohttp's CPU per request.

Failures are these exceptions (``TimeoutError`` past the deadline); ``gateway.backends.torchserve``
translates them as it translates aiohttp's.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools


class CannotConnect(Exception):
    """The connection could not be made: the request never reached the server."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class Disconnected(Exception):
    """The server closed the connection before the answer was complete."""

    def __init__(self) -> None:
        super().__init__("Server disconnected")


class ProtocolError(Exception):
    """The server's answer is not valid HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.content_type = b""
        self.body: list[bytes] = []
        self.keep_alive = True
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no asyncio.Transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(str(exc)))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(Disconnected())

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes, str]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.status, self.content_type, self.body = 0, b"", []
        if len(body) <= 65536:  # one send() for the usual small body; a large one is not copied
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        await self.waiter
        self.waiter = None
        return self.status, b"".join(self.body), self.content_type.decode("latin-1")


class Pool:
    """At most ``limit`` connections to ``host:port``; a request waits for one when all are busy."""

    def __init__(self, host: str, port: int, *, limit: int = 100, connect_timeout: float = 2.0) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self._host_header = f"{host}:{port}".encode()
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise CannotConnect(exc) from exc
        return conn

    async def post(self, path: str, body: bytes, content_type: str, extra: bytes = b"") -> tuple[int, bytes, str]:
        """``POST path``: the answer's status, body and content type (raises the errors above).
        ``extra``: more header lines, each ending in CRLF."""
        head = b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            path.encode(),
            self._host_header,
            content_type.encode("latin-1"),
            len(body),
            extra,
        )
        async with self._slots:
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed:
                    conn = candidate
                    break
            if conn is None:
                conn = await self._connect()
            done = False
            try:
                answer = await conn.post(head, body)
                done = True
            finally:
                if done and conn.keep_alive and not conn.closed:
                    self._idle.append(conn)
                else:  # failed, cancelled mid-answer, or the server asked to close: never reused
                    conn.close()
            return answer

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
