"""``loadgen.floor.closed`` with a ``rate`` (the bare answer measured at direct's rate in
``make bench``): the clients together never send ahead of the even schedule, whatever the server
could take; without a rate they send as fast as it answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from localstack import free_port

from loadgen import floor
from loadgen.floor import Way


class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Ok.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/x"
    httpd.shutdown()
    httpd.server_close()


def test_a_rate_holds_the_clients_to_the_schedule(url):
    way = Way("paced", url, None, b"{}")
    Ok.count = 0
    rps, cpu, errors = asyncio.run(floor.closed(way, 4, 1.0, rate=50))
    sent = Ok.count - 8  # the connections were opened with 8 requests first
    assert errors == 0 and cpu is None
    assert 0 < sent <= 50 * 1.0 + 4  # the schedule's turns in one second, one more per client at most
    assert rps <= 60


def test_without_a_rate_the_clients_send_as_fast_as_answers_come(url):
    rps, _, errors = asyncio.run(floor.closed(Way("free", url, None, b"{}"), 4, 0.5))
    assert errors == 0 and rps > 60  # far above the paced test's 50 a second
