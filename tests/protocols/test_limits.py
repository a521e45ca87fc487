"""Bounded decode work: large bodies decode off the event loop, a few at a time; the rest answer
503 with Retry-After at once instead of queueing."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from gateway.app import create_app
from gateway.protocols import oip, tfserving_rest, torchserve

V1 = {"inputs": [[1.0, 2.0, 3.0, 4.0]]}
V2 = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}


@pytest.mark.parametrize(
    ("path", "module", "name", "body"),
    [
        ("/v1/models/toy/versions/2:predict", tfserving_rest, "decode_predict_body", V1),
        ("/predictions/toy/2", torchserve, "decode_predict_body", V1),
        ("/v2/models/toy/versions/2/infer", oip, "decode_infer_request", V2),
    ],
)
async def test_a_large_decode_beyond_the_cap_answers_503_at_once(
    settings, fake_backends, monkeypatch, path, module, name, body
):
    settings = settings.model_copy(update={"large_body_bytes": 16, "large_decodes_max": 1})
    app = create_app(settings, backends=fake_backends)
    entered, release = threading.Event(), threading.Event()
    real = getattr(module, name)

    def held_decode(*args, **kwargs):  # the first decode holds its slot until the test lets go
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, held_decode)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        first = asyncio.create_task(client.post(path, json=body))
        # The decode runs in a worker thread, so the event loop (and this test) goes on meanwhile.
        assert await asyncio.to_thread(entered.wait, 10)
        busy = await client.post(path, json=body)
        release.set()
        done = await first
        again = await client.post(path, json=body)
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "1"
    assert "GATEWAY_LARGE_DECODES_MAX" in busy.json()["error"]
    assert done.status_code == 200, done.text
    assert again.status_code == 200, again.text  # the slot was given back
