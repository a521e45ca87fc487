"""A deploy to a stack run by agents (GATEWAY_AGENT_STACKS): stored, staged, loaded by the replicas,
smoke-tested on each ready replica and only then routed; a replica that fails to load it fails the
deploy below min_ready and changes nothing. The agents are simulated here by a thread writing the
reports real agents write (tests/e2e/test_replica_routing.py runs real ones)."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.registry import RegistryStore
from tests.fakes import FakeBackend
from tests.rollouts.test_backend_defaults import tf_version_tar

ADMIN = {"Authorization": "Bearer unit-admin-token-0123456789"}
BODY = {"instances": [[1, 2, 3, 4]]}


class Agents(threading.Thread):
    """Replicas tf-0 and tf-1 whose agents report every desired version ready (or failed)."""

    def __init__(self, url: str, fail: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.registry = RegistryStore(url)
        self.fail = fail or {}
        self.stop = threading.Event()

    def run(self) -> None:
        self.registry.migrate()
        for rid in ("tf-0", "tf-1"):
            self.registry.register_replica(rid, "tfserving", f"{rid}:8500", f"node-{rid}")
        reported: dict[str, set[tuple[str, int]]] = {"tf-0": set(), "tf-1": set()}
        while not self.stop.wait(0.05):
            wanted = {(m, v) for m, versions in self.registry.desired("tfserving").items() for v in versions}
            for rid, held in reported.items():
                self.registry.heartbeat(rid)
                for key in wanted - held:
                    failing = self.fail.get(rid) if key[1] >= 4 else None
                    self.registry.report_version(rid, *key, *(("failed", failing) if failing else ("ready", "")))
                for key in held - wanted:
                    self.registry.forget_version(rid, *key)
                reported[rid] = set(wanted)

    def __enter__(self) -> Agents:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(5)
        self.registry.close()


@pytest.fixture
def replicas() -> dict[str, FakeBackend]:
    return {}


@pytest.fixture
def agent_settings(settings):
    return settings.model_copy(update={"agent_stacks": ["tfserving"], "replica_poll_seconds": 0.1,
                                       "deploy_ready_timeout_seconds": 10.0, "backend_probe_seconds": 3600})  # fmt: skip


def app(agent_settings, fake_backends, replicas):
    def adapter(stack, address):
        replicas[address.split(":")[0]] = FakeBackend(stack)
        return replicas[address.split(":")[0]]

    return create_app(agent_settings, fake_backends, replica_adapter=adapter)


def test_a_deploy_is_routed_once_every_replica_has_it_ready_and_passed_the_smoke_test(
    agent_settings, fake_backends, replicas, tmp_path
):
    with Agents(agent_settings.database_url), TestClient(app(agent_settings, fake_backends, replicas)) as client:
        r = client.post("/admin/models/toy/deploy?version=4", content=tf_version_tar(tmp_path), headers=ADMIN)
        assert r.status_code == 200, r.text
        assert {rid: [t.version for t, _ in b.requests] for rid, b in replicas.items()} == {"tf-0": [4], "tf-1": [4]}
        answer = client.post("/v1/models/toy/versions/4:predict", json=BODY)
        assert answer.status_code == 200 and answer.json() == {"predictions": [[4, 8, 12, 16]]}
        history = client.get("/admin/history?model=toy&limit=2", headers=ADMIN).json()["history"]
        assert [h["action"] for h in history] == ["deploy", "stage"]
        assert history[0]["detail"]["replicas"] == {"tf-0": "ready", "tf-1": "ready"}
        registry = RegistryStore(agent_settings.database_url)
        assert registry.staged() == []  # the routing write ended the staging
        assert 4 in registry.desired("tfserving")["toy"]  # available now: the agents keep it
        registry.close()
    assert fake_backends["tfserving"].requests == []  # the gateway's own adapter is never used


def test_one_replica_failing_below_min_ready_fails_the_deploy_naming_it_and_changes_nothing(
    agent_settings, fake_backends, replicas, tmp_path
):
    failing = Agents(agent_settings.database_url, fail={"tf-1": "out of GPU memory"})
    with failing, TestClient(app(agent_settings, fake_backends, replicas)) as client:
        before = client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]
        r = client.post("/admin/models/toy/deploy?version=4", content=tf_version_tar(tmp_path), headers=ADMIN)
        assert r.status_code == 502, r.text
        assert r.json()["error"] == (
            "deploy failed at step 'ready': 1 of 2 tfserving replicas failed to load version 4, 2 must hold it "
            "ready (min_ready: every live replica): replica tf-1 (node-tf-1): out of GPU memory"
        )
        assert client.post("/v1/models/toy/versions/4:predict", json=BODY).status_code == 404
        after = client.get("/admin/models/toy", headers=ADMIN).json()["models"][0]
        registered = [
            [{k: v[k] for k in ("version", "backend", "state")} for v in m["versions"]] for m in (before, after)
        ]
        assert after["labels"] == before["labels"] and registered[0] == registered[1]
        (entry,) = client.get("/admin/history?model=toy&limit=1", headers=ADMIN).json()["history"]
        assert (entry["outcome"], entry["detail"]["step"]) == ("failed", "ready")
        assert entry["detail"]["replicas"] == {"tf-0": "ready", "tf-1": "failed: out of GPU memory"}
        registry = RegistryStore(agent_settings.database_url)
        assert registry.staged() == [] and 4 not in registry.desired("tfserving").get("toy", ())
        registry.close()
        assert not (agent_settings.model_store / "toy" / "4").exists()


def test_with_min_ready_one_a_failing_replica_does_not_stop_the_deploy(agent_settings, fake_backends, replicas,
                                                                         tmp_path):  # fmt: skip
    with (
        Agents(agent_settings.database_url, fail={"tf-1": "bad driver"}),
        TestClient(app(agent_settings, fake_backends, replicas)) as client,
    ):
        assert client.put("/admin/models/toy/min-ready", json={"min_ready": 1}, headers=ADMIN).status_code == 200
        r = client.post("/admin/models/toy/deploy?version=4", content=tf_version_tar(tmp_path), headers=ADMIN)
        assert r.status_code == 200, r.text
        assert [t.version for t, _ in replicas["tf-0"].requests] == [4]  # smoke-tested where it is ready
        before = len(replicas["tf-1"].requests)
        for _ in range(10):  # and routed only there
            assert client.post("/v1/models/toy/versions/4:predict", json=BODY).status_code == 200
        assert len(replicas["tf-1"].requests) == before


async def test_a_staging_whose_deploy_died_is_ended_by_the_sweep(agent_settings, fake_backends, replicas):
    with TestClient(app(agent_settings, fake_backends, replicas)) as client:
        deployer = client.app.state.services.deployer
        registry = RegistryStore(agent_settings.database_url)
        with registry.transaction(actor="crashed-gateway", action="stage", model="toy") as tx:
            tx.stage_version("toy", 9, "tfserving")
        assert await deployer.replicas.sweep(3600) == []  # young: maybe a deploy in progress
        assert await deployer.replicas.sweep(0) == [("toy", 9)]
        assert registry.staged() == []
        registry.close()
