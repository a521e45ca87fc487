"""Every front door goes through the one pipeline: TorchServe's pass-through paths included.

A guarded canary reached only through ``/predictions`` must feed its guard, and a shadow version
must see ``/predictions`` traffic, as it does for the other protocols.
"""

from __future__ import annotations

import time

import orjson

from gateway.core.errors import BackendError
from gateway.core.restjson import decode_outputs
from gateway.core.types import InferenceResult, Passthrough, Target

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
ROW = {"instances": [[1.0, 1.0, 1.0, 1.0]]}


def _wait_for(condition, seconds: float = 10.0):
    """Poll ``condition`` until it returns a truthy value (the guard and shadows run in the background)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return value


def _model(client) -> dict:
    return client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]


def test_a_guarded_canary_reached_only_through_predictions_rolls_back(client, fake_backends):
    torchserve = fake_backends["torchserve"]
    torchserve.fail = BackendError("torchserve toy v3: worker died (HTTP 500)")
    torchserve.fail_versions = {3}
    r = client.put(
        "/admin/models/toy/traffic",
        json={"canary": 3, "percent": 50, "guard": {"max_error_ratio": 0.2, "min_requests": 5}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    codes = [client.post("/predictions/toy", content=b"\x00image").status_code for _ in range(40)]
    assert 502 in codes  # the canary was reached, and failed
    _wait_for(lambda: _model(client)["traffic"]["percent"] == 0.0)
    answers = [client.post("/predictions/toy", content=b"\x00image") for _ in range(20)]
    assert [(a.status_code, a.headers["X-Model-Version"]) for a in answers] == [(200, "1")] * 20
    entry = client.get("/admin/history?model=toy&limit=1", headers=ADMIN).json()["history"][0]
    assert (entry["action"], entry["actor"]) == ("guard", "gateway")
    assert entry["message"].startswith("canary 3 share set to 0: canary error ratio 1.000 > 0.2")


def test_shadow_sees_predictions_traffic_and_never_changes_the_answer(client, fake_backends, monkeypatch):
    torchserve, tfserving = fake_backends["torchserve"], fake_backends["tfserving"]

    async def handler(target: Target, request: Passthrough) -> InferenceResult:
        """As the example TorchServe handler answers REST JSON: here, the inputs times the version."""
        torchserve.forwarded.append((target, request.body))
        rows = orjson.loads(request.body)["instances"]
        answer = orjson.dumps({"predictions": [[x * target.version for x in r] for r in rows]})
        return InferenceResult(body=answer, form=None, decode=decode_outputs)

    monkeypatch.setattr(torchserve, "forward", handler)
    r = client.put("/admin/models/toy/shadow", json={"version": 2, "percent": 100}, headers=ADMIN)
    assert r.status_code == 200, r.text
    for _ in range(10):
        r = client.post("/predictions/toy", json=ROW)
        assert (r.status_code, r.headers["X-Model-Version"]) == (200, "1")
        assert r.json() == {"predictions": [[1.0, 1.0, 1.0, 1.0]]}
    results = _wait_for(lambda: (s := _model(client)["shadow_results"]) and s[0]["compared"] == 10 and s)
    assert results[0]["shadow_version"] == 2
    assert results[0]["requests"] == 10
    assert results[0]["max_abs_diff"] == 1.0  # version 2 doubles what version 1 passes on
    assert [(t.version, req.inputs["x"].tolist()) for t, req in tfserving.requests] == [(2, [[1.0] * 4])] * 10
    assert len(torchserve.forwarded) == 10  # the caller's body still went to TorchServe unchanged


def test_a_body_a_shadow_cannot_read_is_not_copied(client, fake_backends):
    client.put("/admin/models/toy/shadow", json={"version": 2, "percent": 100}, headers=ADMIN)
    r = client.post("/predictions/toy", content=b"\x00raw image bytes", headers={"Content-Type": "image/png"})
    assert (r.status_code, r.content) == (200, b"echo:\x00raw image bytes")
    assert fake_backends["tfserving"].requests == []
    assert all(s["requests"] == 0 for s in _model(client)["shadow_results"])
