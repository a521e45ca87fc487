"""The admin gate: a token and a body limit are checked before any byte of an admin body is read.

The bodies here are streamed by generators that count what the gateway pulled from them, so a
test sees whether the body was read, not only which status came back. (tests/test_serve_limits.py
measures the same on a real gateway process: its memory while a 300 MB body streams in.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
READER = {"Authorization": "Bearer unit-read-token-0123456789"}
CHUNK = b"x" * 65536


class Body:
    """An async request body of ``chunks`` chunks of 64 KiB that counts the chunks taken from it."""

    def __init__(self, chunks: int, first: bytes = b"") -> None:
        self.chunks = chunks
        self.first = first
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(self.chunks):
            self.taken += 1
            yield self.first if i == 0 and self.first else CHUNK


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    """One request through an ASGI transport that pulls the body lazily, as a server does."""

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
        ):
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())


@pytest.fixture
def app(settings, fake_backends):
    return create_app(settings.model_copy(update={"max_artifact_bytes": 256 * 1024}), backends=fake_backends)


def test_a_broken_body_without_a_token_is_401_not_400(client):
    r = client.post("/admin/models/mlp/promote", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["error"]


def test_a_read_only_token_is_refused_a_write_before_its_body(client):
    r = client.put("/admin/models/toy/traffic", content=b"[[[", headers=READER)
    assert r.status_code == 403
    assert r.json()["error"] == "token 'reader' is read-only; this action needs a read-write token"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"}, READER])
def test_no_byte_of_an_unauthorised_body_is_read(app, headers):
    body = Body(400)  # 25 MiB
    r = call(app, "PUT", "/admin/models/toy/traffic", content=body, headers=headers)
    assert r.status_code in (401, 403)
    assert body.taken == 0


def test_a_declared_admin_body_over_the_cap_is_refused_unread(app):
    body = Body(32)  # 2 MiB, declared
    headers = {**ADMIN, "Content-Length": str(32 * len(CHUNK))}
    r = call(app, "PUT", "/admin/models/toy/traffic", content=body, headers=headers)
    assert r.status_code == 413
    assert r.json()["error"] == (
        f"request body of {32 * len(CHUNK)} bytes is over the limit of 1048576 (GATEWAY_ADMIN_MAX_BODY_BYTES)"
    )
    assert body.taken == 0


def test_a_chunked_admin_body_is_cut_off_at_the_cap(app):
    body = Body(400, first=b'{"canary": 2, "percent": 10, "pad": "')  # 25 MiB, no Content-Length
    r = call(app, "PUT", "/admin/models/toy/traffic", content=body, headers=ADMIN)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "request body is over the limit of 1048576 bytes (GATEWAY_ADMIN_MAX_BODY_BYTES)"
    assert body.taken <= 1048576 // len(CHUNK) + 1  # not one chunk more than it takes to pass the cap


def test_the_admin_cap_is_a_setting(settings, fake_backends):
    app = create_app(settings.model_copy(update={"admin_max_body_bytes": 100}), backends=fake_backends)
    r = call(app, "PUT", "/admin/state", content=b"models: {}\n# " + b"." * 100, headers=ADMIN)
    assert (r.status_code, r.json()["error"]) == (
        413,
        "request body of 113 bytes is over the limit of 100 (GATEWAY_ADMIN_MAX_BODY_BYTES)",
    )


def test_uploads_keep_the_artifact_cap_counted_while_streaming(app):
    declared = Body(8)  # 512 KiB against 256 KiB
    headers = {**ADMIN, "Content-Length": str(8 * len(CHUNK))}
    r = call(app, "POST", "/admin/models/toy/deploy", content=declared, headers=headers)
    assert r.status_code == 413
    assert r.json()["error"].endswith("over the limit of 262144 (GATEWAY_MAX_ARTIFACT_BYTES)")
    assert declared.taken == 0
    chunked = Body(400)
    r = call(app, "POST", "/admin/models/toy/deploy", content=chunked, headers=ADMIN)
    assert r.status_code == 413
    assert chunked.taken <= 262144 // len(CHUNK) + 1


def test_an_upload_over_the_admin_cap_but_under_the_artifact_cap_goes_through_the_gate(settings, fake_backends):
    body = Body(3, first=b"not a tar archive")  # ~128 KiB: over a 100-byte admin cap, under the artifact cap
    app = create_app(settings.model_copy(update={"admin_max_body_bytes": 100}), backends=fake_backends)
    r = call(app, "POST", "/admin/models/toy/deploy", content=body, headers=ADMIN)
    assert body.taken == 3
    assert r.status_code == 400 and "not a readable tar archive" in r.json()["error"], r.text
