"""The benchmark's wrk load (``loadgen.wrk``, the workers phase of ``make bench``): the real ``wrk``
against a server in this process that answers 200 only to the exact body and headers, so every byte
of a binary body must reach it through the generated Lua script; its answers counted as requests,
other statuses as errors, and this process's CPU spread over what wrk counted."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from localstack import free_port

from loadgen import wrk
from loadgen.floor import Way

BODY = bytes(range(256)) + b'"quoted" \\ ]] \n\r\x00end'
HEADERS = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "12"}

# `make test` installs wrk (its `nginx` step); without it the tests skip, except under CI=true.
pytestmark = pytest.mark.skipif(
    wrk.available() is None and os.environ.get("CI") != "true", reason="wrk is not installed (make nginx)"
)


class Exact(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        exact = body == BODY and all(self.headers[k] == v for k, v in HEADERS.items())
        self.send_response(200 if exact and self.path == "/ok" else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Exact)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_every_request_carries_the_exact_body_and_headers(server):
    way = Way("exact", f"{server}/ok", os.getpid(), BODY, HEADERS)
    rps, cpu_ms, errors = asyncio.run(wrk.closed(way, 2, 1.0))
    assert errors == 0 and rps > 100
    assert cpu_ms is not None and 0 < cpu_ms < 100  # this process served them


def test_answers_other_than_2xx_are_errors(server):
    way = Way("wrong path", f"{server}/not-here", None, BODY, HEADERS)
    rps, cpu_ms, errors = asyncio.run(wrk.closed(way, 2, 1.0))
    assert cpu_ms is None and errors > 0 and errors >= rps * 0.5


def test_the_summary_is_read_as_wrk_prints_it():
    output = """Running 1s test @ http://127.0.0.1:18765/no
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    78.67us  161.01us   5.54ms   99.59%
    Req/Sec    26.50k   570.19    27.22k    72.73%
  28988 requests in 1.10s, 3.26MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 28988
Requests/sec:  26368.38
Transfer/sec:      2.97MB
"""
    assert wrk.parse(output) == (26368.38, 28988, 28993)
    with pytest.raises(RuntimeError, match="no summary"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")
