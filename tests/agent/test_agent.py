"""The agent's convergence, in process: a backend double for one replica, a real local artifact
store and a real SQLite registry (PostgreSQL and the real backends: tests/e2e/test_agents.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from localstack import free_port

from gateway.agent.agent import READY_FILE, Agent, AgentConfig
from gateway.artifacts import LocalArtifactStore
from gateway.core.errors import BackendError, BackendUnavailable
from gateway.core.types import VersionStatus
from gateway.registry import RegistryStore


class Replica:
    """One backend replica's management API: what is loaded, which archives break, whether it is up."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.loaded: set[tuple[str, int]] = set()
        self.broken: set[tuple[str, int]] = set()
        self.down = False
        self.calls: list[tuple[str, str, int, dict]] = []
        self.kind = "tfserving"
        self.raw_passthrough = False

    async def status(self, model: str, version: int) -> VersionStatus:
        if self.down:
            return VersionStatus(version, "UNKNOWN", "connection refused")
        return VersionStatus(version, "AVAILABLE" if (model, version) in self.loaded else "NOT_FOUND")

    async def load(self, model: str, version: int, keep) -> None:
        self.calls.append(("load", model, version, {m: sorted(v) for m, v in keep.items()}))
        if self.down:
            raise BackendUnavailable("tfserving: connection refused")
        assert (self.model_dir / model / str(version) / "saved_model.pb").is_file(), "loaded before it was pulled"
        if (model, version) in self.broken:
            raise BackendError(f"tfserving load {model} v{version}: Could not load the SavedModel")
        self.loaded.add((model, version))

    async def unload(self, model: str, version: int, keep) -> None:
        self.calls.append(("unload", model, version, {m: sorted(v) for m, v in keep.items()}))
        if self.down:
            raise BackendUnavailable("tfserving: connection refused")
        self.loaded.discard((model, version))


@pytest.fixture
def world(tmp_path: Path):
    registry = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.migrate()
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    replica = Replica(tmp_path / "local")
    config = AgentConfig("tfserving", "tf-0", "10.0.0.6:8500", "node-b", tmp_path / "local",
                         discovery_grace_seconds=0.0, ready_timeout_seconds=2.0)  # fmt: skip
    agent = Agent(config, registry, artifacts, replica)  # type: ignore[arg-type]
    yield agent, registry, artifacts, replica, tmp_path
    registry.close()


async def store_version(artifacts: LocalArtifactStore, tmp_path: Path, model: str, version: int) -> None:
    source = tmp_path / "src" / model / str(version)
    source.mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(f"{model} {version}".encode())
    await artifacts.put(model, version, source)


def desire(registry: RegistryStore, model: str, version: int, state: str = "available", backend: str = "tfserving"):
    with registry.transaction(actor="t", action="desire", model=model) as tx:
        tx.ensure_model(model)
        tx.upsert_version(model, version, backend, f"{model}/{version}", state)


def states(registry: RegistryStore) -> dict[tuple[str, int], tuple[str, str]]:
    (replica,) = registry.replicas()
    return {(v.model, v.version): (v.state, v.error) for v in replica.versions}


async def test_desired_versions_are_pulled_loaded_and_reported_ready(world):
    agent, registry, artifacts, replica, tmp_path = world
    for v in (1, 2):
        await store_version(artifacts, tmp_path, "mlp", v)
        desire(registry, "mlp", v)
    desire(registry, "cnn", 7, backend="torchserve")  # another stack's version: not this replica's
    await agent.converge()
    assert replica.loaded == {("mlp", 1), ("mlp", 2)}
    # TF Serving's reload replaces the whole list: the second load keeps the first version.
    assert replica.calls == [("load", "mlp", 1, {"mlp": [1]}), ("load", "mlp", 2, {"mlp": [1, 2]})]
    assert states(registry) == {("mlp", 1): ("ready", ""), ("mlp", 2): ("ready", "")}
    (row,) = registry.replicas()
    assert (row.replica_id, row.stack, row.address, row.host) == ("tf-0", "tfserving", "10.0.0.6:8500", "node-b")
    assert (tmp_path / "local" / "mlp" / "2" / "saved_model.pb").read_bytes() == b"mlp 2"

    replica.calls.clear()
    await agent.converge()  # converged: nothing to do
    assert replica.calls == []


async def test_a_version_no_longer_desired_is_unloaded_deleted_and_forgotten(world):
    agent, registry, artifacts, replica, tmp_path = world
    for v in (1, 2):
        await store_version(artifacts, tmp_path, "mlp", v)
        desire(registry, "mlp", v)
    await agent.converge()
    desire(registry, "mlp", 1, state="retired")
    replica.calls.clear()
    await agent.converge()
    assert replica.calls == [("unload", "mlp", 1, {"mlp": [2]})]
    assert replica.loaded == {("mlp", 2)}
    assert not (tmp_path / "local" / "mlp" / "1").exists()
    assert states(registry) == {("mlp", 2): ("ready", "")}


async def test_a_broken_version_is_reported_failed_and_nothing_else_changes(world):
    agent, registry, artifacts, replica, tmp_path = world
    for v in (1, 2):
        await store_version(artifacts, tmp_path, "mlp", v)
        desire(registry, "mlp", v)
    replica.broken.add(("mlp", 2))
    await agent.converge()
    assert replica.loaded == {("mlp", 1)}
    assert replica.calls[-1] == ("unload", "mlp", 2, {"mlp": [1]})  # the failed one out, the other kept
    assert states(registry) == {
        ("mlp", 1): ("ready", ""),
        ("mlp", 2): ("failed", "tfserving load mlp v2: Could not load the SavedModel"),
    }
    replica.calls.clear()
    await agent.converge()  # not tried again at once (retry_failed_seconds)
    assert replica.calls == []


async def test_a_version_missing_from_the_artifact_store_is_reported_failed(world):
    agent, registry, _artifacts, replica, _tmp_path = world
    desire(registry, "mlp", 4)
    await agent.converge()
    state, error = states(registry)[("mlp", 4)]
    assert state == "failed" and "mlp v4 in local directory" in error and "not stored" in error
    assert [c[0] for c in replica.calls] == ["unload"]


async def test_a_restarted_backend_is_loaded_again(world):
    agent, registry, artifacts, replica, tmp_path = world
    for v in (1, 2):
        await store_version(artifacts, tmp_path, "mlp", v)
        desire(registry, "mlp", v)
    await agent.converge()
    replica.down = True  # it went away ...
    replica.loaded.clear()
    await agent.converge()
    assert states(registry) == {("mlp", 1): ("ready", ""), ("mlp", 2): ("ready", "")}  # not the versions' fault
    replica.down = False  # ... and came back empty
    replica.calls.clear()
    await agent.converge()
    assert replica.loaded == {("mlp", 1), ("mlp", 2)}
    assert replica.calls[0] == ("load", "mlp", 1, {"mlp": [1, 2]})  # one reload brings both back


async def test_a_registry_outage_leaves_the_replica_serving_what_it_has(world):
    agent, registry, artifacts, replica, tmp_path = world
    for v in (1, 2):
        await store_version(artifacts, tmp_path, "mlp", v)
        desire(registry, "mlp", v)
    replica.broken.add(("mlp", 2))
    await agent.converge()
    assert states(registry)[("mlp", 2)][0] == "failed"
    agent.registry = RegistryStore(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", connect_timeout=1)
    replica.loaded.clear()  # the backend restarts meanwhile,
    replica.broken.clear()  # and v2's next attempt will work
    agent._failed.clear()
    await agent.converge()
    assert replica.loaded == {("mlp", 1), ("mlp", 2)}  # from the last desired state it read
    assert states(registry)[("mlp", 2)][0] == "failed"  # the report could not be written yet
    agent.registry = registry  # back: the reports kept meanwhile are written
    await agent.converge()
    assert states(registry) == {("mlp", 1): ("ready", ""), ("mlp", 2): ("ready", "")}


async def test_an_agent_started_during_an_outage_changes_nothing(world, tmp_path):
    agent, _registry, _artifacts, replica, _ = world
    (tmp_path / "local" / "mlp" / "1").mkdir(parents=True)  # what the replica held before
    replica.loaded.add(("mlp", 1))
    agent.registry = RegistryStore(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", connect_timeout=1)
    await agent.converge()
    assert replica.calls == [] and replica.loaded == {("mlp", 1)}
    assert (tmp_path / "local" / "mlp" / "1").is_dir()


async def test_run_registers_the_replica_keeps_its_heartbeat_and_follows_changes(tmp_path):
    import asyncio

    registry = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}")  # not migrated: the agent does it
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    replica = Replica(tmp_path / "local")
    config = AgentConfig("tfserving", "tf-0", "10.0.0.6:8500", "node-b", tmp_path / "local",
                         poll_seconds=0.1, heartbeat_seconds=0.1, discovery_grace_seconds=0.0)  # fmt: skip
    stop = asyncio.Event()
    running = asyncio.create_task(Agent(config, registry, artifacts, replica).run(stop))  # type: ignore[arg-type]
    try:

        async def until(check, what: str):
            for _ in range(200):
                try:
                    if await asyncio.to_thread(check):
                        return
                except Exception:  # the agent has not created the tables yet
                    pass
                await asyncio.sleep(0.05)
            raise AssertionError(f"not {what}")

        await until(lambda: registry.replicas() != [], "registered")
        first = registry.replicas()[0].heartbeat_at
        await until(lambda: registry.replicas()[0].heartbeat_at > first, "a later heartbeat")
        await store_version(artifacts, tmp_path, "mlp", 1)
        desire(registry, "mlp", 1)
        await until(lambda: states(registry) == {("mlp", 1): ("ready", "")}, "mlp v1 ready")
        assert replica.loaded == {("mlp", 1)}
        stop.set()
        await asyncio.wait_for(running, 5)
        assert registry.replicas() == []  # a stopping agent takes its replica out of the pool at once
        assert replica.loaded == {("mlp", 1)}  # and leaves the backend as it is (it may be draining)
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
        registry.close()


def ready_at_each_load(replica: Replica, ready: Path) -> list[bool]:
    """Whether ``ready`` existed at each of ``replica``'s loads from now on."""
    seen: list[bool] = []
    load = replica.load
    present = ready.exists  # a stat of a local file: nothing to wait for

    async def watching(model, version, keep):
        seen.append(present())
        await load(model, version, keep)

    replica.load = watching  # type: ignore[method-assign]
    return seen


async def test_the_ready_file_says_whether_the_replica_holds_its_versions(world):
    """``READY_FILE`` (Kubernetes' readiness of the agent's container): absent until every version
    the stack serves is ready, absent while one has failed on this replica, and absent again while
    a restarted backend is down or being loaded again."""
    agent, registry, artifacts, replica, tmp_path = world
    ready = tmp_path / "local" / READY_FILE
    assert agent.ready_file == ready
    for v in (1, 2):
        await store_version(artifacts, tmp_path, "mlp", v)
        desire(registry, "mlp", v)
    replica.broken.add(("mlp", 2))
    assert not ready.exists()
    await agent.converge()
    assert replica.loaded == {("mlp", 1)} and states(registry)[("mlp", 2)][0] == "failed"
    assert not ready.exists()  # a version it should hold failed here: not available for a drain
    replica.broken.clear()
    agent._failed.clear()  # the retry delay over
    await agent.converge()
    assert replica.loaded == {("mlp", 1), ("mlp", 2)} and ready.is_file()
    assert {model for model, _ in agent._local()} == {"mlp"}  # the file is no model
    replica.down = True  # the backend went away
    replica.loaded.clear()
    await agent.converge()
    assert not ready.exists()
    replica.down = False  # back, empty: loaded again within this pass
    seen = ready_at_each_load(replica, ready)
    await agent.converge()
    assert seen and not any(seen)  # not ready while it was loading again
    assert ready.is_file() and replica.loaded == {("mlp", 1), ("mlp", 2)}


async def test_a_version_that_cannot_be_pulled_keeps_the_replica_unready_until_it_can(world):
    """The artifact store down while a replica restarts: the version is reported failed, the replica
    is not counted available (a drain or rolling update waits), and becomes so once it pulls."""
    agent, registry, artifacts, _replica, tmp_path = world
    ready = tmp_path / "local" / READY_FILE
    desire(registry, "mlp", 1)  # available in the registry, not in the store yet
    await agent.converge()
    assert states(registry)[("mlp", 1)][0] == "failed" and not ready.exists()
    await store_version(artifacts, tmp_path, "mlp", 1)
    agent._failed.clear()
    await agent.converge()
    assert states(registry)[("mlp", 1)][0] == "ready" and ready.is_file()


async def test_a_staged_version_that_fails_leaves_the_replica_ready(world):
    """A deploy in progress whose version fails here: the deploy reports it and ends the staging;
    the replica still serves every version its stack serves, so it stays available."""
    agent, registry, artifacts, replica, tmp_path = world
    ready = tmp_path / "local" / READY_FILE
    for v in (1, 2):
        await store_version(artifacts, tmp_path, "mlp", v)
    desire(registry, "mlp", 1)
    with registry.transaction(actor="t", action="stage", model="mlp") as tx:
        tx.stage_version("mlp", 2, "tfserving")
    replica.broken.add(("mlp", 2))
    await agent.converge()
    assert states(registry)[("mlp", 2)][0] == "failed" and replica.loaded == {("mlp", 1)}
    assert ready.is_file()
    replica.down = True  # the backend gone: not ready, whatever the versions
    await agent.converge()
    assert not ready.exists()


async def test_a_replica_that_lost_a_version_it_served_is_not_ready_while_it_loads_it_again(world):
    agent, registry, artifacts, replica, tmp_path = world
    await store_version(artifacts, tmp_path, "mlp", 1)
    desire(registry, "mlp", 1)
    await agent.converge()
    ready = tmp_path / "local" / READY_FILE
    assert ready.is_file()
    replica.loaded.clear()  # restarted empty between two passes, and up again
    seen = ready_at_each_load(replica, ready)
    await agent.converge()
    assert seen == [False] and ready.is_file()


async def test_no_ready_file_without_a_desired_state_and_none_left_from_an_earlier_run(world, tmp_path):
    import asyncio

    agent, _registry, _artifacts, _replica, _ = world
    ready = tmp_path / "local" / READY_FILE
    ready.parent.mkdir(parents=True)
    ready.touch()  # an earlier run's (an emptyDir outlives the agent's container)
    agent.registry = RegistryStore(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none", connect_timeout=1)
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(0.5)
    assert not ready.exists()  # nothing read: it cannot know what it should hold
    stop.set()
    await running
