"""Staged versions and min_ready (SQLite and PostgreSQL): agents load staged versions beside the
available ones before a deploy routes them; unstaging is revisioned but not audited; the per-model
min_ready is stored with the policy; migration 0003 keeps what 0002 held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from gateway.registry import Policy, RegistryInvalid, RegistryStore, StagedVersion
from gateway.registry.engine import alembic_config, create_registry_engine, normalize_url
from tests.registry.test_watch import CEILING, same_url


def setup(store: RegistryStore) -> None:
    with store.transaction(actor="t", action="setup", model="mlp") as tx:
        tx.ensure_model("mlp")
        tx.upsert_version("mlp", 1, "torchserve", "mlp/1")
        tx.upsert_version("mlp", 2, "tfserving", "mlp/2")


def test_staged_versions_are_desired_beside_the_available_ones(store: RegistryStore) -> None:
    setup(store)
    before = store.revision()
    with store.transaction(actor="alice", action="deploy", model="mlp") as tx:
        tx.stage_version("mlp", 3, "torchserve")
        tx.stage_version("fresh", 1, "tfserving")  # a model with no row yet: its first deploy
    assert tx.revision == before + 1
    assert store.desired("torchserve") == {"mlp": frozenset({1, 3})}
    assert store.desired("tfserving") == {"fresh": frozenset({1}), "mlp": frozenset({2})}
    assert "fresh" not in store.snapshot().models  # staged is not routed: no version, no model

    staged = store.staged()
    assert [(s.model, s.version, s.backend, s.actor) for s in staged] == [
        ("fresh", 1, "tfserving", "alice"),
        ("mlp", 3, "torchserve", "alice"),
    ]
    assert all(isinstance(s, StagedVersion) for s in staged)
    assert abs(staged[0].staged_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert staged[0].staged_at.tzinfo is not None
    assert store.staged("torchserve") == [staged[1]]

    # Staging again replaces the row (another backend, actor, time); unstaging in a transaction.
    with store.transaction(actor="bob", action="deploy", model="mlp") as tx:
        tx.stage_version("mlp", 3, "tfserving")
    (again,) = store.staged("tfserving")[1:]
    assert (again.model, again.version, again.backend, again.actor) == ("mlp", 3, "tfserving", "bob")
    assert store.desired("torchserve") == {"mlp": frozenset({1})}
    assert store.desired("tfserving") == {"fresh": frozenset({1}), "mlp": frozenset({2, 3})}
    with store.transaction(actor="bob", action="deploy", model="mlp") as tx:
        assert tx.unstage_version("mlp", 3) is True
        assert tx.unstage_version("mlp", 3) is False
    assert [s.model for s in store.staged()] == ["fresh"]


def test_a_version_both_staged_and_available_is_desired_once(store: RegistryStore) -> None:
    setup(store)
    with store.transaction(actor="t", action="deploy", model="mlp") as tx:
        tx.stage_version("mlp", 1, "torchserve")
    assert store.desired("torchserve") == {"mlp": frozenset({1})}


def test_holdings_tell_the_versions_a_stack_serves_from_those_only_staged(store: RegistryStore) -> None:
    setup(store)
    with store.transaction(actor="t", action="deploy", model="mlp") as tx:
        tx.stage_version("mlp", 1, "torchserve")  # staged and available: served
        tx.stage_version("mlp", 3, "torchserve")  # only staged: a deploy in progress
        tx.stage_version("fresh", 1, "torchserve")
    assert store.holdings("torchserve") == (
        {"fresh": frozenset({1}), "mlp": frozenset({1, 3})},
        {"mlp": frozenset({1})},
    )
    assert store.holdings("tfserving") == ({"mlp": frozenset({2})}, {"mlp": frozenset({2})})


def test_unstage_bumps_the_revision_without_a_history_row(store: RegistryStore) -> None:
    setup(store)
    with store.transaction(actor="t", action="deploy", model="mlp") as tx:
        tx.stage_version("mlp", 3, "torchserve")
    revision, history = store.revision(), store.history()
    assert store.unstage("mlp", 3) is True
    assert store.revision() == revision + 1
    assert store.history() == history
    assert store.staged() == [] and store.desired("torchserve") == {"mlp": frozenset({1})}
    assert store.unstage("mlp", 3) is False  # nothing went: nothing to tell anyone
    assert store.revision() == revision + 1
    assert store.history() == history


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_unstage_notifies_the_watchers(store: RegistryStore) -> None:
    import psycopg

    with store.transaction(actor="t", action="deploy", model="mlp") as tx:
        tx.stage_version("mlp", 3, "torchserve")
    url = normalize_url(same_url(store)).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as listener:
        listener.execute("LISTEN gateway_registry")
        assert store.unstage("mlp", 3) is True
        payloads = [n.payload for n in listener.notifies(timeout=CEILING, stop_after=1)]
    assert payloads == [str(store.revision())]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda tx: tx.stage_version("mlp", 3, "triton"), "unknown backend 'triton'"),
        (lambda tx: tx.stage_version("mlp", 0, "torchserve"), "version"),
        (lambda tx: tx.stage_version("bad name", 3, "torchserve"), "invalid model name"),
        (lambda tx: tx.unstage_version("mlp", True), "version"),
    ],
)
def test_staging_checks_its_arguments(store: RegistryStore, call, message: str) -> None:
    setup(store)
    revision = store.revision()
    with pytest.raises(RegistryInvalid, match=message), store.transaction(actor="t", action="x", model="mlp") as tx:
        call(tx)
    assert store.revision() == revision and store.staged() == []
    with pytest.raises(RegistryInvalid, match="unknown backend"):
        store.staged("triton")
    with pytest.raises(RegistryInvalid, match="invalid model name"):
        store.unstage("bad name", 3)


def test_min_ready_is_stored_with_the_policy(store: RegistryStore) -> None:
    setup(store)
    assert store.snapshot().models["mlp"].policy.min_ready is None  # the default
    policy = Policy(canary_version=2, canary_percent=5.0, stable_history=(1,), min_ready=2)
    with store.transaction(actor="t", action="min_ready", model="mlp") as tx:
        tx.set_policy("mlp", policy)
        assert tx.get_policy("mlp") == policy
    assert store.snapshot().models["mlp"].policy == policy
    with store.transaction(actor="t", action="min_ready", model="mlp") as tx:
        tx.set_policy("mlp", Policy(min_ready=None))
    assert store.snapshot().models["mlp"].policy == Policy()


@pytest.mark.parametrize("bad", [0, -1, 1001, True, False, 2.0, "2"])
def test_min_ready_must_be_null_or_an_integer_from_1_to_1000(store: RegistryStore, bad: object) -> None:
    setup(store)
    with (
        pytest.raises(RegistryInvalid, match=r"min_ready must be an integer from 1 to 1000, or null"),
        store.transaction(actor="t", action="min_ready", model="mlp") as tx,
    ):
        tx.set_policy("mlp", Policy(min_ready=bad))  # type: ignore[arg-type]
    assert store.snapshot().models["mlp"].policy.min_ready is None
    for good in (1, 1000):
        with store.transaction(actor="t", action="min_ready", model="mlp") as tx:
            tx.set_policy("mlp", Policy(min_ready=good))
        assert store.snapshot().models["mlp"].policy.min_ready == good


def test_migration_0003_keeps_what_0002_held(registry_url: str) -> None:
    from alembic import command

    engine = create_registry_engine(normalize_url(registry_url), connect_timeout=5)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO registry_models (name, created_at) VALUES ('mlp', :t)"), {"t": now})
            conn.execute(
                text(
                    "INSERT INTO registry_versions (model, version, backend, artifact, state, created_at, updated_at)"
                    " VALUES ('mlp', 1, 'torchserve', 'mlp/1', 'available', :t, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                text(
                    "INSERT INTO registry_policies (model, canary_version, canary_percent, sticky_header,"
                    " shadow_version, shadow_percent, stable_history, guard)"
                    " VALUES ('mlp', 1, 25.0, 'X-User', NULL, 0.0, '[1]', NULL)"
                )
            )
            conn.execute(text("INSERT INTO registry_labels (model, name, version) VALUES ('mlp', 'stable', 1)"))
            conn.execute(text("UPDATE registry_meta SET revision = 7"))
    finally:
        engine.dispose()

    store = RegistryStore(registry_url)
    try:
        store.migrate()  # 0002 -> 0003
        with store._engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM registry_alembic_version")).scalar_one() == "0003"
        snapshot = store.snapshot()
        assert snapshot.revision == 7
        mlp = snapshot.models["mlp"]
        assert mlp.labels == {"stable": 1} and mlp.versions[1].artifact == "mlp/1"
        assert mlp.policy == Policy(canary_version=1, canary_percent=25.0, sticky_header="X-User", stable_history=(1,))
        assert store.staged() == []
        assert store.desired("torchserve") == {"mlp": frozenset({1})}
        with store.transaction(actor="t", action="deploy", model="mlp") as tx:
            tx.stage_version("mlp", 2, "torchserve")
        assert store.desired("torchserve") == {"mlp": frozenset({1, 2})}
    finally:
        store.close()
