"""The admin API in process, against backend doubles and a SQLite registry."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml
from pydantic import SecretStr

from gateway.app import create_app
from tests.waiting import wait_until

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
READER = {"Authorization": "Bearer unit-read-token-0123456789"}
ROW = {"instances": [[1.0, 1.0, 1.0, 1.0]]}


def test_admin_routes_need_a_token(client):
    r = client.get("/admin/models")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["error"]
    r = client.get("/admin/models", headers={"Authorization": "Bearer wrong-token"})
    assert (r.status_code, r.json()["error"]) == (401, "the admin token is not valid")


def test_read_only_token_reads_but_cannot_write(client):
    assert client.get("/admin/models", headers=READER).status_code == 200
    r = client.post("/admin/models/toy/rollback", headers=READER)
    assert r.status_code == 403
    assert r.json()["error"] == "token 'reader' is read-only; this action needs a read-write token"


def test_start_up_adopts_the_store_with_the_state_files_labels(client):
    status = client.get("/admin/models/toy", headers=READER).json()["models"][0]
    assert status["labels"] == {"canary": 3, "stable": 1}
    assert [v["version"] for v in status["versions"]] == [1, 2, 3]
    ints = client.get("/admin/models/ints", headers=READER).json()["models"][0]
    assert ints["labels"] == {"stable": 1}
    history = client.get("/admin/history", headers=READER).json()["history"]
    assert history[-1]["action"] == "adopt" and history[-1]["actor"] == "gateway"


def test_traffic_split_and_sticky_header(client):
    r = client.put("/admin/models/toy/traffic", json={"canary": 2, "percent": 30}, headers=ADMIN)
    assert r.status_code == 200, r.text
    seen = Counter(client.post("/v1/models/toy:predict", json=ROW).headers["X-Model-Version"] for _ in range(600))
    assert set(seen) == {"1", "2"}
    assert 0.22 < seen["2"] / 600 < 0.38
    client.put("/admin/models/toy/traffic", json={"canary": 2, "percent": 50, "sticky_header": "X-User"}, headers=ADMIN)
    for user in ("alice", "bob", "carol", "dave"):
        versions = {
            client.post("/v1/models/toy:predict", json=ROW, headers={"X-User": user}).headers["X-Model-Version"]
            for _ in range(20)
        }
        assert len(versions) == 1, f"{user} saw {versions}"


def test_promote_rollback_and_history(client):
    assert client.post("/admin/models/toy/promote", json={}, headers=ADMIN).json()["stable"] == 3
    assert client.post("/v1/models/toy:predict", json=ROW).headers["X-Model-Version"] == "3"
    r = client.post("/admin/models/toy/rollback", headers=ADMIN)
    assert r.json() == {"model": "toy", "stable": 1, "previous": 3}
    assert client.post("/v1/models/toy:predict", json=ROW).headers["X-Model-Version"] == "1"
    r = client.post("/admin/models/toy/rollback", headers=ADMIN)
    assert r.status_code == 409
    assert r.json()["error"] == "model 'toy' has no previous stable version to roll back to"
    actions = [h["action"] for h in client.get("/admin/history?model=toy", headers=READER).json()["history"]]
    assert actions[:2] == ["rollback", "promote"]
    entry = client.get("/admin/history?model=toy&limit=1", headers=READER).json()["history"][0]
    assert (entry["actor"], entry["outcome"], entry["message"]) == ("admin", "ok", "stable 3 -> 1")


def test_bad_admin_input_is_a_clear_400_or_404(client):
    r = client.put("/admin/models/toy/traffic", json={"canary": 2, "percent": 130}, headers=ADMIN)
    assert r.status_code == 400 and "percent" in r.json()["error"]
    r = client.put("/admin/models/toy/traffic", json={"canary": 9, "percent": 10}, headers=ADMIN)
    assert (r.status_code, r.json()["error"]) == (404, "model 'toy' has no available version 9")
    r = client.post("/admin/models/nope/rollback", headers=ADMIN)
    assert (r.status_code, r.json()["error"]) == (404, "model 'nope' not found")


def test_retire_refuses_versions_in_use(client):
    r = client.post("/admin/models/toy/versions/1/retire", headers=ADMIN)
    assert r.status_code == 409
    assert r.json()["error"] == "model 'toy' version 1 is in use by label 'stable'; not retired"
    r = client.post("/admin/models/toy/versions/2/retire", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert client.post("/v1/models/toy/versions/2:predict", json=ROW).status_code == 404


def test_export_and_apply_are_idempotent(client):
    exported = client.get("/admin/state", headers=READER).text
    assert "stable: 1" in exported
    r = client.put("/admin/state", content=exported, headers=ADMIN)
    assert r.json() == {"changed": False, "changes": []}
    document = yaml.safe_load(exported)
    document["models"]["toy"]["labels"]["stable"] = 2
    changed = yaml.safe_dump(document)
    r = client.put("/admin/state", content=changed, headers=ADMIN)
    assert r.json().get("changed") is True, r.text
    assert client.post("/v1/models/toy:predict", json=ROW).headers["X-Model-Version"] == "2"
    r = client.put("/admin/state", content="models:\n  toy:\n    labels:\n      stable: 9\n", headers=ADMIN)
    assert r.status_code == 400 and "version 9 is not available" in r.json()["error"]


def test_state_survives_a_restart(settings, fake_backends, client):
    client.put("/admin/models/toy/shadow", json={"version": 2, "percent": 25}, headers=ADMIN)
    client.put("/admin/models/toy/traffic", json={"canary": 3, "percent": 5}, headers=ADMIN)
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings, backends=fake_backends)) as again:
        status = again.get("/admin/models/toy", headers=READER).json()["models"][0]
    assert status["shadow"] == {"version": 2, "percent": 25.0}
    assert status["traffic"]["canary"] == 3 and status["traffic"]["percent"] == 5.0


@pytest.mark.parametrize("percent", [100])
def test_shadow_compares_and_never_changes_the_answer(client, percent):
    client.put("/admin/models/toy/shadow", json={"version": 2, "percent": percent}, headers=ADMIN)
    for _ in range(10):
        r = client.post("/v1/models/toy:predict", json=ROW)
        assert r.headers["X-Model-Version"] == "1"
        assert r.json() == {"predictions": [[1.0, 1.0, 1.0, 1.0]]}

    def all_copies_done() -> list:  # shadow copies run in the background
        results = client.get("/admin/models/toy", headers=READER).json()["models"][0]["shadow_results"]
        done = results and results[0]["compared"] + results[0]["errors"] + results[0]["dropped"] >= 10
        return results if done else []

    results = wait_until(all_copies_done, "the 10 shadow copies compared")
    assert results[0]["requests"] == 10
    assert results[0]["compared"] == 10
    assert results[0]["max_abs_diff"] == 1.0  # version 2 doubles, version 1 does not
    assert results[0]["shadow_version"] == 2


def test_inference_is_open_unless_keys_are_configured(settings, fake_backends, client):
    from fastapi.testclient import TestClient

    assert client.post("/v1/models/toy:predict", json=ROW).status_code == 200
    keyed = settings.model_copy(
        update={"inference_keys": [SecretStr("key-one-0123456789"), SecretStr("key-two-0123456789")]}
    )
    with TestClient(create_app(keyed, backends=fake_backends)) as c:
        r = c.post("/v1/models/toy:predict", json=ROW)
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert (
            c.post("/v1/models/toy:predict", json=ROW, headers={"X-API-Key": "key-two-0123456789"}).status_code == 200
        )
        r = c.post("/v2/models/toy/infer", json={}, headers={"Authorization": "Bearer nope"})
        assert (r.status_code, r.json()["error"]) == (401, "the API key is not valid")
        assert c.get("/v2/health/ready").status_code == 200  # probes carry no key
