"""The body limit holds for chunked bodies too: a body sent without ``Content-Length`` is counted
while it streams and refused (413) once over ``max_body_bytes`` (4096 in the unit settings), on
every inference front door, before any backend sees it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from localstack import free_port
from starlette.requests import ClientDisconnect, Request

from gateway.app import create_app
from gateway.core.errors import PayloadTooLarge
from gateway.protocols.common import read_body

LIMIT = 4096
ROW = b"[1.0, 2.0, 3.0, 4.0],"


def _chunks(total: int, size: int = 512):
    """A JSON-looking body of ``total`` bytes, as a generator: httpx sends it chunked."""
    body = (b'{"instances": [' + ROW * (total // len(ROW) + 1))[:total]
    for start in range(0, total, size):
        yield body[start : start + size]


@pytest.mark.parametrize(
    "path", ["/v1/models/toy:predict", "/v2/models/toy/infer", "/predictions/toy/1", "/predictions/toy/2"]
)
def test_a_chunked_body_over_the_limit_is_413_and_reaches_no_backend(client, fake_backends, path):
    r = client.post(path, content=_chunks(LIMIT * 4), headers={"Content-Type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413, r.text
    assert r.json()["error"] == f"request body is over the limit of {LIMIT} bytes (GATEWAY_MAX_BODY_BYTES)"
    assert all(not backend.requests for backend in fake_backends.values())


def test_a_chunked_body_under_the_limit_is_served(client):
    body = b'{"instances": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]}'
    r = client.post("/v1/models/toy:predict", content=iter([body[:10], body[10:]]))
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[1.0, 2.0, 3.0, 4.0]] * 2}


@pytest.fixture
def served(settings, fake_backends):
    """The app behind a real uvicorn on a free port (chunked framing parsed by a real server)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, backends=fake_backends), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=30)


def test_a_real_server_refuses_an_oversized_chunked_body(served, fake_backends):
    head = (
        b"POST /v1/models/toy:predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _chunks(LIMIT * 4)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served), timeout=30) as sock:
        sock.sendall(head + framed)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:300]
    expected = b'{"error":"request body is over the limit of 4096 bytes (GATEWAY_MAX_BODY_BYTES)"}'
    assert rest.endswith(expected), answer[-300:]
    assert all(not backend.requests for backend in fake_backends.values())


def _request(messages: list[dict], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    pending = list(messages)

    async def receive() -> dict:
        return pending.pop(0)

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers or []}, receive)


@pytest.mark.parametrize(
    "chunks", [[b'{"instances": [[1.0]]}'], [b'{"instances": ', b"[[1.0]]", b"}"], [b""], [b"", b"{}", b""]]
)
def test_read_body_joins_the_chunks_and_leaves_the_body_for_starlette(chunks):
    request = _request(
        [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    )
    body = asyncio.run(read_body(request, 1000))
    assert body == b"".join(chunks)
    assert asyncio.run(request.body()) == body  # not "Stream consumed": Starlette finds it


def test_read_body_refuses_past_the_limit_while_reading_and_a_disconnect_is_a_disconnect():
    request = _request([{"type": "http.request", "body": b"x" * 600, "more_body": True},
                        {"type": "http.request", "body": b"x" * 600, "more_body": False}])  # fmt: skip
    with pytest.raises(PayloadTooLarge, match="over the limit of 1000 bytes"):
        asyncio.run(read_body(request, 1000))
    request = _request([{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnect):
        asyncio.run(read_body(request, 1000))
    request = _request([], [(b"content-length", b"1001")])
    with pytest.raises(PayloadTooLarge, match="request body of 1001 bytes"):
        asyncio.run(read_body(request, 1000))
