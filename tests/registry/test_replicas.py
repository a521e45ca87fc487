"""Backend replicas in the registry (SQLite and PostgreSQL): registration, heartbeats, reports
per version, and the desired state per stack derived from the version records."""

from __future__ import annotations

import pytest

from gateway.registry import RegistryInvalid, RegistryStore


def add_versions(store: RegistryStore) -> None:
    with store.transaction(actor="t", action="setup", model="mlp") as tx:
        tx.ensure_model("mlp")
        tx.upsert_version("mlp", 1, "torchserve", "mlp/1")
        tx.upsert_version("mlp", 2, "tfserving", "mlp/2")
        tx.upsert_version("mlp", 3, "torchserve", "mlp/3", "retired")
    with store.transaction(actor="t", action="setup", model="cnn") as tx:
        tx.ensure_model("cnn")
        tx.upsert_version("cnn", 5, "torchserve", "cnn/5")


def test_desired_state_is_the_available_versions_of_each_stack(store: RegistryStore) -> None:
    assert store.desired("torchserve") == {}
    add_versions(store)
    assert store.desired("torchserve") == {"cnn": frozenset({5}), "mlp": frozenset({1})}
    assert store.desired("tfserving") == {"mlp": frozenset({2})}
    with store.transaction(actor="t", action="retire", model="cnn") as tx:
        tx.set_version_state("cnn", 5, "retired")
    assert store.desired("torchserve") == {"mlp": frozenset({1})}
    with pytest.raises(RegistryInvalid, match="unknown backend 'triton'"):
        store.desired("triton")


def test_replicas_register_report_and_forget_without_bumping_the_revision(store: RegistryStore) -> None:
    add_versions(store)
    revision = store.revision()
    store.register_replica("ts-0", "torchserve", "http://10.0.0.5:8080", "node-a")
    store.register_replica("tf-0", "tfserving", "10.0.0.6:8500", "node-b")
    store.report_version("ts-0", "mlp", 1, "loading")
    store.report_version("ts-0", "mlp", 1, "ready")
    store.report_version("ts-0", "cnn", 5, "failed", "torchserve register cnn v5: bad archive")
    (tf, ts) = store.replicas()
    assert (ts.replica_id, ts.stack, ts.address, ts.host) == ("ts-0", "torchserve", "http://10.0.0.5:8080", "node-a")
    assert [(v.model, v.version, v.state, v.error) for v in ts.versions] == [
        ("cnn", 5, "failed", "torchserve register cnn v5: bad archive"),
        ("mlp", 1, "ready", ""),
    ]
    assert (tf.replica_id, tf.versions) == ("tf-0", ())
    assert [r.replica_id for r in store.replicas("tfserving")] == ["tf-0"]

    before = ts.heartbeat_at
    assert store.heartbeat("ts-0") is True
    assert store.replicas("torchserve")[0].heartbeat_at > before
    assert store.heartbeat("gone-0") is False

    store.forget_version("ts-0", "cnn", 5)
    assert [(v.model, v.version) for v in store.replicas("torchserve")[0].versions] == [("mlp", 1)]
    store.register_replica("ts-0", "torchserve", "http://10.0.0.7:8080", "node-c")  # moved: renewed
    (ts,) = store.replicas("torchserve")
    # A renewed replica (a restarted agent) reports afresh: no gateway routes to it on an old "ready".
    assert (ts.address, ts.host, len(ts.versions)) == ("http://10.0.0.7:8080", "node-c", 0)
    assert store.revision() == revision  # reports are not configuration: no gateway re-reads for them
    assert store.history(limit=10)[0].action == "setup"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.report_version("ts-0", "mlp", 1, "serving"), "replica state must be one of"),
        (lambda s: s.report_version("ts-0", "../x", 1, "ready"), "model name"),
        (lambda s: s.report_version("ts-0", "mlp", 0, "ready"), "version"),
        (lambda s: s.register_replica("", "torchserve", "a", "h"), "replica_id must be a non-empty string"),
        (lambda s: s.register_replica("r", "onnx", "a", "h"), "unknown backend 'onnx'"),
    ],
)
def test_bad_reports_are_refused_naming_the_field(store: RegistryStore, call, message) -> None:
    store.register_replica("ts-0", "torchserve", "http://a:8080", "h")
    with pytest.raises(RegistryInvalid, match=message):
        call(store)
