"""The routing plan is pure: ``plan(record, command)`` reads only its arguments, and the state it
plans is exactly what the registry holds once the change has written it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.errors import Conflict, GatewayError, NotFound
from gateway.registry import Policy, RegistryStore
from gateway.registry.records import ModelRecord, RegistryInvalid, VersionRecord
from gateway.rollouts.plan import (
    CutCanary,
    Desired,
    Promote,
    Rollback,
    RoutingState,
    SetLabel,
    SetMinReady,
    SetShadow,
    SetTraffic,
    changes,
    checked,
    plan,
    write_state,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VERSIONS = st.integers(1, 5)
GUARD = {"window_seconds": 60.0, "min_requests": 20.0, "max_error_ratio": 0.1}


def record(
    available: set[int], retired: set[int] = frozenset(), labels=None, policy: Policy | None = None
) -> ModelRecord:
    versions = {
        n: VersionRecord("m", n, "torchserve", f"m/{n}", "available" if n in available else "retired", NOW, NOW)
        for n in sorted(available | set(retired))
    }
    return ModelRecord("m", versions, dict(labels or {}), policy or Policy())


@st.composite
def records(draw: st.DrawFn) -> ModelRecord:
    known = draw(st.sets(VERSIONS, min_size=1))
    retired = draw(st.sets(st.sampled_from(sorted(known))))
    available = known - retired
    labels = draw(st.dictionaries(st.sampled_from(["stable", "canary", "beta"]), st.sampled_from(sorted(known))))
    canary = draw(st.none() | st.sampled_from(sorted(known)))
    shadow = draw(st.none() | st.sampled_from(sorted(known)))
    policy = Policy(
        canary_version=canary,
        canary_percent=draw(st.floats(0, 100)) if canary is not None else 0.0,
        sticky_header=draw(st.none() | st.just("X-User")),
        shadow_version=shadow,
        shadow_percent=draw(st.floats(0, 100)) if shadow is not None else 0.0,
        stable_history=tuple(draw(st.lists(st.sampled_from(sorted(known)), max_size=4))),
        guard=draw(st.none() | st.just(GUARD)),
        min_ready=draw(st.none() | st.integers(1, 1000)),
    )
    return record(available, retired, labels, policy)


percents = st.floats(0, 100) | st.floats(-10, 110)  # some out of range: the registry's error
COMMANDS = st.one_of(
    st.builds(Promote, st.none() | VERSIONS),
    st.just(Rollback()),
    st.builds(SetTraffic, st.none() | VERSIONS, percents, st.none() | st.sampled_from(["X-User", "bad header"])),
    st.builds(SetShadow, st.none() | VERSIONS, percents),
    st.builds(SetLabel, st.sampled_from(["stable", "canary", "beta", "no way"]), VERSIONS),
    st.builds(CutCanary, VERSIONS),
    st.builds(SetMinReady, st.none() | st.integers(-1, 1001)),  # some out of range: the registry's error
    st.builds(
        Desired,
        st.dictionaries(st.sampled_from(["stable", "canary"]), VERSIONS),
        st.none() | VERSIONS,
        st.floats(0, 100),
    ),
)


@given(records(), COMMANDS)
def test_plan_is_pure_and_its_state_is_valid(rec: ModelRecord, command) -> None:
    before = copy.deepcopy(rec)
    try:
        first = plan(rec, command)
    except (GatewayError, RegistryInvalid) as exc:
        with pytest.raises(type(exc)):  # the same answer every time
            plan(rec, command)
        assert rec == before
        return
    assert rec == before  # nothing read but its arguments, nothing changed
    assert plan(rec, command) == first
    assert checked(rec, first.state) == first.state  # what the registry takes as it is
    for version in [*first.state.labels.values(), first.state.policy.canary_version]:
        assert version is None or version in rec.versions


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RegistryStore:
    s = RegistryStore(f"sqlite:///{tmp_path_factory.mktemp('plan') / 'registry.db'}")
    s.migrate()
    return s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rec=records(), command=COMMANDS)
def test_the_change_writes_the_planned_state(store: RegistryStore, rec: ModelRecord, command) -> None:
    """Write ``rec`` to a registry, plan there and write the plan: the registry then holds the
    planned state. A plan that fails fails the same way inside the transaction, writing nothing."""
    with store.transaction(actor="t", action="setup", model=None) as tx:
        for label in list(tx.model("m").labels if tx.model("m") else []):
            tx.delete_label("m", label)
        tx.ensure_model("m")
        tx.set_policy("m", Policy())
        for number, version in rec.versions.items():
            tx.upsert_version("m", number, "torchserve", f"m/{number}", version.state)
        write_state(tx, "m", RoutingState.of(tx.model("m")), RoutingState(rec.labels, rec.policy))
    rec = store.snapshot().models["m"]  # with the versions of earlier examples, which stay
    revision = store.revision()
    try:
        planned = plan(rec, command)
    except (GatewayError, RegistryInvalid) as exc:
        with pytest.raises(type(exc)), store.transaction(actor="t", action="x", model="m") as tx:
            current = tx.model("m")
            write_state(tx, "m", RoutingState.of(current), plan(current, command).state)
        assert store.revision() == revision
        return
    with store.transaction(actor="t", action="x", model="m") as tx:
        write_state(tx, "m", RoutingState.of(tx.model("m")), planned.state)
    after = store.snapshot().models["m"]
    assert RoutingState.of(after) == planned.state


# --- the commands, as a table ------------------------------------------------------------------
R = record({1, 2, 3}, labels={"stable": 1, "canary": 3}, policy=Policy(canary_version=3, canary_percent=20.0))


@pytest.mark.parametrize(
    ("rec", "command", "labels", "policy", "message"),
    [
        (R, Promote(), {"stable": 3}, Policy(stable_history=(1,)), "stable 1 -> 3"),
        (R, Promote(2), {"stable": 2}, Policy(stable_history=(1,)), "stable 1 -> 2"),
        (
            record({1, 2}, labels={"stable": 2}, policy=Policy(stable_history=(1,))),
            Rollback(),
            {"stable": 1},
            Policy(),
            "stable 2 -> 1",
        ),
        (R, SetTraffic(None, 50.0), {"stable": 1}, Policy(), "canary None at 0.0%"),
        (
            R,
            SetTraffic(2, 10.0, "X-User", GUARD),
            {"stable": 1, "canary": 2},
            Policy(canary_version=2, canary_percent=10.0, sticky_header="X-User", guard=GUARD),
            "canary 2 at 10.0%, sticky on X-User",
        ),
        (R, CutCanary(3), R.labels, Policy(canary_version=3), ""),
        (R, CutCanary(2), R.labels, R.policy, ""),  # another canary by now: nothing to cut
        (R, SetShadow(2, 5.0), R.labels, Policy(3, 20.0, shadow_version=2, shadow_percent=5.0), "shadow 2 at 5.0%"),
        (
            R,
            SetLabel("stable", 2),
            {"stable": 2, "canary": 3},
            Policy(3, 20.0, stable_history=(1,)),
            "label stable: 1 -> 2",
        ),
        (R, SetMinReady(2), R.labels, Policy(3, 20.0, min_ready=2), "min_ready set to 2"),
        (
            record({1}, labels={"stable": 1}, policy=Policy(min_ready=2)),
            SetMinReady(None),
            {"stable": 1},
            Policy(),
            "min_ready back to the default (all replicas)",
        ),
    ],
)
def test_commands(rec, command, labels, policy, message) -> None:
    planned = plan(rec, command)
    assert planned.state == RoutingState(labels, policy)
    assert planned.message == message


@pytest.mark.parametrize(
    ("rec", "command", "error", "text"),
    [
        (record({1}, labels={"stable": 1}), Promote(), Conflict, "no canary to promote"),
        (record({1}, {2}, labels={"stable": 1}), Promote(2), NotFound, "no available version 2"),
        (record({1}, labels={"stable": 1}, policy=Policy(stable_history=(1,))), Rollback(), Conflict, "roll back"),
        (R, SetTraffic(2, 10.0, "bad header"), RegistryInvalid, "not a valid HTTP header name"),
        (R, SetShadow(2, 101.0), RegistryInvalid, "between 0 and 100"),
        (R, SetTraffic(2, 10.0, None, {"window_seconds": 1.0}), RegistryInvalid, "give max_error_ratio"),
        (R, SetTraffic(2, 10.0, None, {"window": 1.0}), RegistryInvalid, "unknown keys"),
        (R, SetMinReady(0), RegistryInvalid, "min_ready must be an integer from 1 to 1000"),
    ],
)
def test_commands_that_cannot_apply(rec, command, error, text) -> None:
    with pytest.raises(error, match=text):
        plan(rec, command)


def test_a_desired_state_lists_its_changes_and_an_unchanged_one_none() -> None:
    wanted = Desired({"stable": 2, "canary": 3}, canary=3, percent=20.0)
    planned = plan(R, wanted)
    assert planned.facts["changes"] == ["m label stable -> 2"]
    assert plan(R, Desired({"stable": 1, "canary": 3}, canary=3, percent=20.0)).facts["changes"] == []
    assert changes("m", RoutingState.of(R), RoutingState({}, Policy())) == [
        "m label canary removed",
        "m label stable removed",
        "m traffic/shadow updated",
    ]
    # min_ready is said on its own; a document without it asks for the default.
    ready = record({1}, labels={"stable": 1}, policy=Policy(min_ready=2))
    assert plan(ready, Desired({"stable": 1}, min_ready=2)).facts["changes"] == []
    assert plan(ready, Desired({"stable": 1}, min_ready=3)).facts["changes"] == ["m min_ready -> 3"]
    assert plan(ready, Desired({"stable": 1})).facts["changes"] == ["m min_ready -> default"]
