"""The guarded canary: a failing canary loses its share by itself, and the history says why."""

from __future__ import annotations

from gateway.core.errors import BackendError
from tests.waiting import wait_until

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
ROW = {"instances": [[1.0, 1.0, 1.0, 1.0]]}


def test_failing_canary_is_cut_to_zero(client, fake_backends):
    fake_backends["torchserve"].fail = BackendError("torchserve toy v3: worker died (HTTP 500)")
    fake_backends["torchserve"].fail_versions = {3}
    r = client.put(
        "/admin/models/toy/traffic",
        json={"canary": 3, "percent": 50, "guard": {"max_error_ratio": 0.2, "min_requests": 5}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    codes = [client.post("/v1/models/toy:predict", json=ROW).status_code for _ in range(40)]
    assert 502 in codes

    def canary_cut() -> bool:  # the guard writes in the background
        traffic = client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]["traffic"]
        return traffic["canary"] == 3 and traffic["percent"] == 0.0

    wait_until(canary_cut, "the guard cutting the canary's share")
    codes = [client.post("/v1/models/toy:predict", json=ROW).status_code for _ in range(40)]
    assert codes == [200] * 40
    entry = client.get("/admin/history?model=toy&limit=1", headers=ADMIN).json()["history"][0]
    assert (entry["action"], entry["actor"]) == ("guard", "gateway")
    assert entry["message"].startswith("canary 3 share set to 0: canary error ratio 1.000 > 0.2")


def test_guard_thresholds_are_validated(client):
    r = client.put(
        "/admin/models/toy/traffic", json={"canary": 3, "percent": 5, "guard": {"max_p99_ratio": 0.5}}, headers=ADMIN
    )
    assert r.status_code == 400
    assert "max_p99_ratio" in r.json()["error"]
    r = client.put("/admin/models/toy/traffic", json={"canary": 3, "percent": 5, "guard": {}}, headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["error"] == "guard: give max_error_ratio and/or max_p99_ratio"
