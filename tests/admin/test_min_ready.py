"""min_ready through the admin API and the CLI (in process, backend doubles, a SQLite registry):
set, back to the default, refused when malformed, in the history, the status and the state
document only when set."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
import yaml

from gateway.app import create_app
from gateway.cli import main
from tests.waiting import wait_until

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
READER = {"Authorization": "Bearer unit-read-token-0123456789"}


def _status(client) -> dict:
    return client.get("/admin/models/toy", headers=READER).json()["models"][0]


def test_min_ready_is_set_and_back_to_the_default_with_a_history_row(client):
    before = client.get("/admin/models", headers=READER).content
    assert b"min_ready" not in before  # unset: the status JSON is as it was
    assert "min_ready" not in client.get("/admin/state", headers=READER).text

    r = client.put("/admin/models/toy/min-ready", json={"min_ready": 2}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.content == b'{"model":"toy","min_ready":2}'
    assert _status(client)["min_ready"] == 2
    (last,) = client.get("/admin/history?model=toy&limit=1", headers=READER).json()["history"]
    assert (last["action"], last["actor"], last["outcome"]) == ("min_ready", "admin", "ok")
    assert (last["message"], last["detail"]) == ("min_ready set to 2", {"min_ready": 2})

    r = client.put("/admin/models/toy/min-ready", json={"min_ready": None}, headers=ADMIN)
    assert r.content == b'{"model":"toy","min_ready":null}'
    assert "min_ready" not in _status(client)
    (last,) = client.get("/admin/history?model=toy&limit=1", headers=READER).json()["history"]
    assert last["message"] == "min_ready back to the default (all replicas)"
    after = client.get("/admin/models", headers=READER).content  # the same bytes, two writes later
    assert after == before.replace(b'{"revision":1,', b'{"revision":3,', 1)


@pytest.mark.parametrize("body", [{"min_ready": 0}, {"min_ready": 1001}, {"min_ready": True}, {"min_ready": "2"},
                                  {"min_ready": 2.5}, {}])  # fmt: skip
def test_a_bad_min_ready_is_refused_naming_it(client, body):
    history = client.get("/admin/history", headers=READER).json()["history"]
    r = client.put("/admin/models/toy/min-ready", json=body, headers=ADMIN)
    assert r.status_code in (400, 422), r.text
    assert "min_ready" in r.json()["error"]
    assert client.get("/admin/history", headers=READER).json()["history"] == history
    assert "min_ready" not in _status(client)


def test_min_ready_needs_a_known_model_and_a_write_token(client):
    r = client.put("/admin/models/ghost/min-ready", json={"min_ready": 2}, headers=ADMIN)
    assert r.status_code == 404 and "ghost" in r.json()["error"]
    assert client.put("/admin/models/toy/min-ready", json={"min_ready": 2}).status_code == 401
    assert client.put("/admin/models/toy/min-ready", json={"min_ready": 2}, headers=READER).status_code == 403
    assert "min_ready" not in _status(client)


def test_the_state_document_carries_min_ready_only_when_set(client):
    client.put("/admin/models/toy/min-ready", json={"min_ready": 3}, headers=ADMIN)
    exported = yaml.safe_load(client.get("/admin/state", headers=READER).text)
    assert exported["models"]["toy"]["min_ready"] == 3
    assert all("min_ready" not in entry for name, entry in exported["models"].items() if name != "toy")
    r = client.put("/admin/state", content=yaml.safe_dump(exported), headers=ADMIN)
    assert r.json() == {"changed": False, "changes": []}

    exported["models"]["toy"]["min_ready"] = 1
    r = client.put("/admin/state", content=yaml.safe_dump(exported), headers=ADMIN)
    assert r.json() == {"changed": True, "changes": ["toy min_ready -> 1"]}
    assert _status(client)["min_ready"] == 1

    del exported["models"]["toy"]["min_ready"]  # declarative: absent is the default
    r = client.put("/admin/state", content=yaml.safe_dump(exported), headers=ADMIN)
    assert r.json() == {"changed": True, "changes": ["toy min_ready -> default"]}
    assert "min_ready" not in _status(client)

    exported["models"]["toy"]["min_ready"] = 0
    r = client.put("/admin/state", content=yaml.safe_dump(exported), headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"].startswith("models.toy.min_ready must be an integer")


@pytest.fixture
def served(settings, fake_backends, monkeypatch) -> Iterator[str]:
    """The gateway serving on a free local port (for the CLI, which speaks HTTP)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, backends=fake_backends), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the gateway to start")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "unit-admin-token-0123456789")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_cli_sets_min_ready_and_back_to_the_default(served, capsys):
    assert main(["--url", served, "min-ready", "toy", "2"]) == 0
    assert '"min_ready": 2' in capsys.readouterr().out
    assert main(["--url", served, "status", "toy"]) == 0
    assert '"min_ready": 2' in capsys.readouterr().out
    assert main(["--url", served, "min-ready", "toy", "--default"]) == 0
    assert '"min_ready": null' in capsys.readouterr().out
    assert main(["--url", served, "min-ready", "toy", "0"]) == 1
    assert "min_ready" in capsys.readouterr().err
    assert main(["--url", served, "min-ready", "toy"]) == 1
    assert capsys.readouterr().err.strip() == "gateway min-ready: give either N (1-1000), or --default"
    assert main(["--url", served, "min-ready", "toy", "2", "--default"]) == 1
    assert "give either N" in capsys.readouterr().err
    assert main(["--url", served, "min-ready", "ghost", "2"]) == 1
    assert capsys.readouterr().err.strip() == "gateway min-ready: 404: model 'ghost' not found"
