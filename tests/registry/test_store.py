"""RegistryStore on both backends: migrations, transactions, history, snapshots, persistence."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from sqlalchemy import text

from gateway.registry import Policy, RegistryStore, Snapshot


def deploy(store: RegistryStore, model: str = "mlp", version: int = 1, backend: str = "torchserve") -> int:
    """Add ``model`` ``version`` labelled stable; return the new revision."""
    with store.transaction(actor="admin", action="deploy", model=model, message=f"deploy {version}") as tx:
        tx.ensure_model(model)
        tx.upsert_version(model, version, backend, f"{model}/{version}")
        tx.set_label(model, "stable", version)
    assert tx.revision is not None
    return tx.revision


def test_migrate_creates_an_empty_registry_and_is_idempotent(registry_url: str) -> None:
    store = RegistryStore(registry_url)
    try:
        store.migrate()
        assert store.is_empty()
        assert store.revision() == 0
        assert store.snapshot() == Snapshot(revision=0, models={})
        assert store.history() == []
        store.migrate()  # a second replica starting, or a restart: nothing to do
        assert store.revision() == 0
        with store._engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM registry_alembic_version")).scalar_one() == "0003"
    finally:
        store.close()


def test_transaction_writes_everything_and_one_history_row(store: RegistryStore) -> None:
    policy = Policy(canary_version=2, canary_percent=12.5, sticky_header="X-User", stable_history=(1,))
    with store.transaction(actor="admin", action="deploy", model="mlp", detail={"by": "test"}) as tx:
        assert tx.ensure_model("mlp") is True
        assert tx.ensure_model("mlp") is False
        tx.upsert_version("mlp", 1, "torchserve", "mlp/1")
        tx.upsert_version("mlp", 2, "tfserving", "mlp/2")
        tx.set_label("mlp", "stable", 1)
        tx.set_policy("mlp", policy)
        seen = tx.model("mlp")  # the transaction sees its own writes
        assert seen is not None and set(seen.versions) == {1, 2} and seen.labels == {"stable": 1}
        assert tx.get_policy("mlp") == policy
        tx.message = "deployed mlp 1 and 2"
        tx.detail["versions"] = [1, 2]
    assert tx.revision == 1 == store.revision()
    assert not store.is_empty()

    model = store.snapshot().models["mlp"]
    assert model.labels == {"stable": 1}
    assert model.policy == policy
    assert model.versions[2].backend == "tfserving" and model.versions[2].artifact == "mlp/2"
    assert model.versions[1].state == "available"

    [entry] = store.history()
    assert (entry.model, entry.action, entry.actor, entry.outcome) == ("mlp", "deploy", "admin", "ok")
    assert entry.message == "deployed mlp 1 and 2"
    assert entry.detail == {"by": "test", "versions": [1, 2]}
    assert entry.at.utcoffset() == timedelta(0)


def test_an_exception_inside_a_transaction_changes_nothing(store: RegistryStore) -> None:
    deploy(store)
    before, history_before = store.snapshot(), store.history()
    with pytest.raises(RuntimeError, match="backend said no"):
        with store.transaction(actor="admin", action="promote", model="mlp") as tx:
            tx.upsert_version("mlp", 2, "tfserving", "mlp/2")
            tx.set_label("mlp", "stable", 2)
            tx.set_policy("mlp", Policy(stable_history=(1,)))
            tx.ensure_model("other")
            raise RuntimeError("backend said no")
    assert store.snapshot() == before
    assert store.history() == history_before
    assert store.revision() == before.revision


def test_record_appends_a_failed_attempt_and_bumps_the_revision(store: RegistryStore) -> None:
    deploy(store)
    before = store.snapshot()
    revision = store.record(
        actor="ops",
        action="promote",
        model="ghost",  # the model it failed on need not exist
        outcome="failed",
        message="no such model",
        detail={"status": 404},
    )
    assert revision == before.revision + 1 == store.revision()
    assert store.snapshot().models == before.models
    latest = store.history(limit=1)[0]
    assert (latest.model, latest.action, latest.actor, latest.outcome) == (
        "ghost",
        "promote",
        "ops",
        "failed",
    )
    assert latest.message == "no such model" and latest.detail == {"status": 404}
    with pytest.raises(ValueError, match="outcome"):
        store.record(actor="ops", action="x", model=None, outcome="maybe", message="")


def test_history_is_newest_first_and_filters_by_model(store: RegistryStore) -> None:
    deploy(store, "a", 1)
    deploy(store, "b", 1)
    deploy(store, "a", 2)
    store.record(actor="admin", action="apply", model=None, outcome="ok", message="global")
    everything = store.history()
    assert [(h.model, h.message) for h in everything] == [
        (None, "global"),
        ("a", "deploy 2"),
        ("b", "deploy 1"),
        ("a", "deploy 1"),
    ]
    assert [h.id for h in everything] == sorted((h.id for h in everything), reverse=True)
    assert [h.message for h in store.history("a")] == ["deploy 2", "deploy 1"]
    assert [h.message for h in store.history("a", limit=1)] == ["deploy 2"]
    assert store.history("nobody") == []
    with pytest.raises(ValueError, match="limit"):
        store.history(limit=0)


def test_snapshot_holds_every_model_version_state_label_and_policy(store: RegistryStore) -> None:
    deploy(store, "mlp", 1)
    deploy(store, "cnn", 7, "tfserving")
    guard = {"max_error_ratio": 0.05, "min_requests": 100.0, "window_seconds": 60.0}
    with store.transaction(actor="admin", action="traffic", model="mlp") as tx:
        created = tx.upsert_version("mlp", 2, "torchserve", "mlp/2")
        tx.set_label("mlp", "canary", 2)
        tx.set_policy(
            "mlp",
            Policy(canary_version=2, canary_percent=5, shadow_version=1, shadow_percent=100, guard=guard),
        )
    with store.transaction(actor="admin", action="retire", model="mlp") as tx:
        tx.delete_label("mlp", "canary")
        tx.set_policy("mlp", Policy(stable_history=(1,)))
        retired = tx.set_version_state("mlp", 2, "retired")
        assert tx.delete_label("mlp", "canary") is False
    assert retired.created_at == created.created_at and retired.updated_at >= created.updated_at

    snap = store.snapshot()
    assert snap.revision == 4 == store.revision()
    assert sorted(snap.models) == ["cnn", "mlp"]
    mlp = snap.models["mlp"]
    assert {v: r.state for v, r in mlp.versions.items()} == {1: "available", 2: "retired"}
    assert mlp.labels == {"stable": 1}
    assert mlp.policy == Policy(stable_history=(1,))
    assert snap.models["cnn"].versions[7].backend == "tfserving"
    for record in [*mlp.versions.values(), *snap.models["cnn"].versions.values()]:
        assert record.created_at.tzinfo is not None and record.created_at.utcoffset() == timedelta(0)

    with store.transaction(actor="admin", action="guard", model="mlp") as tx:
        tx.set_policy("mlp", Policy(canary_version=1, canary_percent=0.0, guard=guard))
    assert store.snapshot().models["mlp"].policy.guard == guard


def test_a_new_store_on_the_same_database_sees_the_same_data(registry_url: str) -> None:
    first = RegistryStore(registry_url)
    first.migrate()
    deploy(first, "mlp", 1)
    deploy(first, "mlp", 2)
    first.record(actor="admin", action="rollback", model="mlp", outcome="failed", message="nope")
    snap, history = first.snapshot(), first.history()
    first.close()

    second = RegistryStore(registry_url)  # a restarted gateway
    try:
        second.migrate()
        assert second.snapshot() == snap
        assert second.history() == history
        assert second.revision() == 3
        assert history[0].at.tzinfo == UTC
    finally:
        second.close()


def test_reads_work_inside_a_transaction_but_nested_writes_are_refused(store: RegistryStore) -> None:
    deploy(store)
    with store.transaction(actor="admin", action="promote", model="mlp") as tx:
        tx.upsert_version("mlp", 2, "torchserve", "mlp/2")
        assert sorted(store.snapshot().models["mlp"].versions) == [1]  # committed state only
        with pytest.raises(RuntimeError, match="already open"):
            store.record(actor="admin", action="promote", model="mlp", outcome="failed", message="")
        with (
            pytest.raises(RuntimeError, match="already open"),
            store.transaction(actor="a", action="b", model="c"),
        ):
            pass
    assert sorted(store.snapshot().models["mlp"].versions) == [1, 2]
    assert store.revision() == 2
