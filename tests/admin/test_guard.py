"""The guarded canary: a failing canary loses its share by itself, and the history says why."""

from __future__ import annotations

import pytest

from gateway.core.errors import BackendError
from gateway.registry import Policy, RegistryStore
from gateway.registry.guardspec import guard_thresholds
from gateway.registry.records import RegistryInvalid
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


BAD_GUARDS = [
    ({"max_p99_ratio": 0.5}, "guard.max_p99_ratio: Input should be greater than or equal to 1"),
    ({"max_error_ratio": 1.5}, "guard.max_error_ratio: Input should be less than or equal to 1"),
    ({"max_error_ratio": 0.1, "window_seconds": 0}, "guard.window_seconds: Input should be greater than 0"),
    ({"max_error_ratio": 0.1, "min_requests": 0}, "guard.min_requests: Input should be greater than or equal to 1"),
    ({}, "guard: give max_error_ratio and/or max_p99_ratio"),
    ({"min_requests": 5}, "guard: give max_error_ratio and/or max_p99_ratio"),
]


@pytest.mark.parametrize(("guard", "message"), BAD_GUARDS)
def test_one_guard_check_for_the_api_and_the_registry(client, tmp_path, guard, message):
    """The admin API's body and the registry's write refuse a guard with the same words."""
    r = client.put("/admin/models/toy/traffic", json={"canary": 3, "percent": 5, "guard": guard}, headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["error"] in (message, f"body.{message}")  # the API names the body
    store = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}")
    store.migrate()
    with store.transaction(actor="t", action="deploy", model="toy") as tx:
        tx.ensure_model("toy")
        tx.upsert_version("toy", 3, "torchserve", "toy/3")
    with pytest.raises(RegistryInvalid) as caught, store.transaction(actor="t", action="traffic", model="toy") as tx:
        tx.set_policy("toy", Policy(canary_version=3, canary_percent=5, guard=guard))
    assert str(caught.value) == message
    store.close()


def test_the_registry_stores_a_guard_in_one_form(client):
    r = client.put(
        "/admin/models/toy/traffic",
        json={"canary": 3, "percent": 5, "guard": {"max_p99_ratio": 2, "min_requests": 5}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert r.json()["guard"] == {"window_seconds": 60.0, "min_requests": 5.0, "max_p99_ratio": 2.0}
    assert r.content.count(b'"min_requests":5.0') == 1  # floats, as before
    assert guard_thresholds({"window_seconds": 60, "min_requests": 5, "max_p99_ratio": 2}) == r.json()["guard"]
    with pytest.raises(RegistryInvalid, match=r"guard: unknown keys \['window_s'\]"):
        guard_thresholds({"max_p99_ratio": 2, "window_s": 5})
