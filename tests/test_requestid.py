"""``X-Request-ID``: a sane caller's ID is kept; a hostile one (over-long, control characters,
CR/LF for header or log injection) never reaches the response header or the logs: it is replaced."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

import pytest

from gateway.requestid import REQUEST_ID, RequestIdMiddleware, new_id

ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
GENERATED = re.compile(r"[0-9a-f]{32}")


def _served_with(raw: bytes) -> tuple[str, list[tuple[bytes, bytes]]]:
    """Send one request whose ``X-Request-ID`` header is ``raw`` (exactly these bytes, as a server
    could hand them over) through the middleware; returns the ID the app saw and the answer's headers."""
    seen: list[str] = []
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:
        seen.append(REQUEST_ID.get())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-request-id", raw)]}
    asyncio.run(RequestIdMiddleware(app)(scope, receive, send))
    return seen[0], sent[0]["headers"]


@pytest.mark.parametrize("good", ["abc-123", "trace.id:42_x", "a" * 128])
def test_a_sane_request_id_is_kept(good: str):
    seen, headers = _served_with(good.encode())
    assert seen == good
    assert (b"x-request-id", good.encode()) in headers


@pytest.mark.parametrize(
    "hostile",
    [
        b"a" * 129,  # over-long
        b"abc\n",  # a final newline, which a ``$`` pattern lets through
        b"abc\r\nSet-Cookie: session=stolen",  # header injection
        b"abc\nfake log line",  # log injection
        b"ab\x00cd",
        b"ab\x1b[31mcd",  # terminal escape into whoever tails the log
        b"ab\tcd",
        "caf\u00e9".encode("latin-1"),
        b"",
    ],
)
def test_a_hostile_request_id_is_replaced_by_a_generated_one(hostile: bytes):
    seen, headers = _served_with(hostile)
    assert GENERATED.fullmatch(seen), seen  # what the logs carry
    assert [v for k, v in headers if k == b"x-request-id"] == [seen.encode()]


def test_the_gateway_answers_with_its_own_id_for_an_over_long_one(client):
    r = client.post("/v1/models/toy:predict", json=ROW, headers={"X-Request-ID": "x" * 500})
    assert r.status_code == 200
    assert GENERATED.fullmatch(r.headers["X-Request-ID"])
    r = client.post("/v1/models/toy:predict", json=ROW, headers={"X-Request-ID": "client-7"})
    assert r.headers["X-Request-ID"] == "client-7"


def test_debug_logs_show_headers_with_credentials_redacted(client, caplog):
    caplog.set_level(logging.DEBUG, logger="gateway.requestid")
    secret = "Bearer unit-admin-token-0123456789"
    headers = {
        "Authorization": secret,
        "X-API-Key": "key-one-0123456789",
        "Cookie": "session=abc123secret",
        "X-Request-ID": "probe-1",
        "User-Agent": "tester\r\nforged line",
    }
    r = client.get("/admin/models/toy", headers=headers)
    assert r.status_code == 200
    (line,) = [rec.getMessage() for rec in caplog.records if rec.name == "gateway.requestid"]
    assert line.startswith("GET '/admin/models/toy' headers: ")  # the path escaped, as every value
    assert "'authorization': [redacted]" in line and "'x-api-key': [redacted]" in line
    assert "'x-request-id': 'probe-1'" in line
    for value in ("unit-admin-token", "key-one-0123456789", "abc123secret"):
        assert value not in line
    assert "\n" not in line and "\r" not in line  # a forged line stays on this one


def test_headers_are_not_described_below_debug(client, caplog):
    caplog.set_level(logging.INFO)
    client.get("/admin/models/toy", headers={"Authorization": "Bearer unit-admin-token-0123456789"})
    assert not [rec for rec in caplog.records if rec.name == "gateway.requestid"]


def test_generated_ids_are_random_version_4_uuids():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        assert GENERATED.fullmatch(value)
        parsed = uuid.UUID(hex=value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == value
