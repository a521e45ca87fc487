"""The lean HTTP/1.1 client TorchServe's inference calls go through (gateway/backends/http1.py),
against a raw asyncio server that answers exactly as each test scripts it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.backends import http1
from gateway.backends.torchserve import TorchServeBackend
from gateway.core.errors import BackendTimeout, BackendUnavailable
from gateway.core.types import InferenceRequest, Target

Answer = Callable[[bytes], Awaitable[bytes | None]]  # request bytes -> answer (None: close)


class Server:
    """Reads one request at a time (head and Content-Length body); answers what ``answer`` says."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.close_after: bytes | None = None  # set: send these bytes instead of the answer, then close

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if self.close_after is not None:
                    writer.write(self.close_after)
                    break
                out = await self.answer(request)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def ok(body: bytes = b'{"predictions": [[1.0]]}', extra: bytes = b"") -> Answer:
    async def answer(_: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
            extra, len(body), body,
        )  # fmt: skip

    return answer


async def test_keep_alive_connections_are_reused_and_the_request_is_exact():
    async with Server(ok()) as server:
        pool = http1.Pool("127.0.0.1", server.port, limit=4)
        for _ in range(5):
            assert await pool.post("/predictions/m/1", b'{"x": 1}', "application/json") == (
                200, b'{"predictions": [[1.0]]}', "application/json",
            )  # fmt: skip
        pool.close()
    assert server.connections == 1
    assert server.requests[0] == (
        b"POST /predictions/m/1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b'Content-Length: 8\r\n\r\n{"x": 1}' % server.port
    )


async def test_a_chunked_answer_and_connection_close_are_honoured():
    async def chunked(_: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

    async with Server(chunked) as server:
        pool = http1.Pool("127.0.0.1", server.port)
        assert await pool.post("/p", b"", "text/plain") == (200, b"abcde", "")
        assert await pool.post("/p", b"", "text/plain") == (200, b"abcde", "")
        pool.close()
    assert server.connections == 2  # the server said close: a new connection for the second


async def test_at_most_limit_connections_and_the_rest_wait():
    gate = asyncio.Event()

    async def slow(request: bytes) -> bytes:
        await gate.wait()
        return await ok()(request)

    async with Server(slow) as server:
        pool = http1.Pool("127.0.0.1", server.port, limit=2)
        calls = [asyncio.create_task(pool.post("/p", b"{}", "application/json")) for _ in range(5)]
        await asyncio.sleep(0.2)
        assert server.connections == 2
        gate.set()
        assert [c[0] for c in await asyncio.gather(*calls)] == [200] * 5
        pool.close()
    assert server.connections == 2


def backend(port: int, timeout: float = 5.0) -> TorchServeBackend:
    return TorchServeBackend(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", timeout=timeout, retry_ratio=0)


async def call(ts: TorchServeBackend) -> object:
    await ts.start()
    try:
        return await ts.infer(Target("m", 1, ts), InferenceRequest(inputs={}, body=b"{}", form="row"))
    finally:
        await ts.close()


@pytest.mark.parametrize("sent", [b"", b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"pred'])
async def test_a_server_that_closes_before_the_answer_is_complete_is_a_503_naming_it(sent):
    async with Server(ok()) as server:
        server.close_after = sent
        with pytest.raises(BackendUnavailable, match=r"^torchserve m v1: connection closed by the server$"):
            await call(backend(server.port))


async def test_no_answer_within_the_deadline_is_a_504():
    async def never(_: bytes) -> bytes:
        await asyncio.sleep(10)
        return b""

    async with Server(never) as server:
        with pytest.raises(BackendTimeout, match="torchserve m v1: no answer within the deadline"):
            await call(backend(server.port, timeout=0.3))
