"""Limits of a real ``gateway serve`` process: what an attacker sees over a socket.

Each test starts the gateway as ``python -m gateway.cli serve`` on a free port, with an empty
model store and backends nobody listens on (it needs neither to answer admin and health routes),
and talks to it over raw sockets so that it controls exactly what is sent and when.
"""

from __future__ import annotations

import contextlib
import select
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from localstack import Service, _http, free_port

TOKEN = "serve-limits-token-0123456789"
MIB = 1024 * 1024


@contextlib.contextmanager
def gateway_process(tmp: Path, **env: str) -> Iterator[tuple[Service, int]]:
    """A gateway process on a free port, ready; stopped (its whole group) afterwards."""
    (tmp / "store").mkdir()
    port = free_port()
    service = Service(
        "gateway",
        [sys.executable, "-m", "gateway.cli", "serve"],
        tmp / "gateway.log",
        env={
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_MODEL_STORE": str(tmp / "store"),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}",
            "GATEWAY_ADMIN_TOKEN": TOKEN,
            "GATEWAY_TORCHSERVE_URL": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_TORCHSERVE_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_TFSERVING_TARGET": f"127.0.0.1:{free_port()}",
            "GATEWAY_BACKEND_PROBE_SECONDS": "3600",
            **env,
        },
    )
    service.start()
    try:
        url = f"http://127.0.0.1:{port}/v2/health/ready"
        service.wait_until(lambda: _http("GET", url)[0] == 200, 90, "ready")
        yield service, port
    finally:
        service.stop()


def status_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident memory) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> int:
    """Reset the process's peak resident memory to its current one (Linux: clear_refs 5); return it."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_of(pid)["VmHWM"]


def send_body(port: int, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send a request head and then every chunk, whatever the server answers meanwhile (unless it
    closes the connection); return the start of the answer, read as soon as it arrives."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if not answer and select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(60)
        with contextlib.suppress(ConnectionResetError):
            while not complete(answer):
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
    return answer


def complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole HTTP response with a Content-Length body."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return len(body) >= length


def megabytes(total: int, chunked: bool = False) -> Iterator[bytes]:
    block = b"[" * MIB
    for _ in range(total):
        yield (b"100000\r\n" + block + b"\r\n") if chunked else block
    if chunked:
        yield b"0\r\n\r\n"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with gateway_process(tmp_path_factory.mktemp("gateway")) as running:
        yield running


def test_an_unauthenticated_300_mb_admin_body_is_refused_without_reading_it(gateway):
    service, port = gateway
    pid = service.proc.pid
    before = reset_peak(pid)
    head = (
        b"PUT /admin/models/mlp/traffic HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (300 * MIB)
    )
    answer = send_body(port, head, megabytes(300))
    grown = status_of(pid)["VmHWM"] - before
    assert grown < 10 * MIB, f"the gateway's peak memory grew by {grown / MIB:.0f} MB"
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


def test_a_chunked_admin_body_over_the_cap_is_cut_off(gateway):
    service, port = gateway
    pid = service.proc.pid
    before = reset_peak(pid)
    head = (
        b"PUT /admin/models/mlp/traffic HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % TOKEN.encode()
    )
    answer = send_body(port, head, megabytes(300, chunked=True))
    grown = status_of(pid)["VmHWM"] - before
    assert grown < 10 * MIB, f"the gateway's peak memory grew by {grown / MIB:.0f} MB"
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"over the limit of 1048576 bytes (GATEWAY_ADMIN_MAX_BODY_BYTES)" in answer


def test_the_server_refuses_connections_past_its_concurrency_limit(tmp_path):
    limit = 4
    with gateway_process(tmp_path, GATEWAY_MAX_CONCURRENCY=str(limit)) as (_, port), contextlib.ExitStack() as open_:
        statuses = []
        for _ in range(2 * limit):  # each connection stays open after its answer (keep-alive)
            sock = open_.enter_context(socket.create_connection(("127.0.0.1", port), timeout=30))
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            statuses.append(int(sock.recv(65536).split(b" ", 2)[1]))
        # Connections count with requests; the one that reaches the limit is refused, and every
        # one after it (a connection the readiness check left may still count: earlier, not later).
        first_refused = statuses.index(503) if 503 in statuses else None
        assert first_refused is not None and first_refused < limit, statuses
        assert set(statuses[first_refused:]) == {503}, statuses
