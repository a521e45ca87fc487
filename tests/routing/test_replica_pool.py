"""The replica pool and the replicated backend (issue 15, item 3), with backend doubles: which
replicas are in the pool, which one a call goes to, and what happens when one fails."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from gateway import metrics
from gateway.core.errors import BackendError, BackendUnavailable, BackendUnreached, VersionMissing
from gateway.core.types import InferenceRequest, Target
from gateway.registry import RegistryUnavailable
from gateway.registry.replicas import ReplicaRecord, ReplicaVersion
from gateway.registry.schema import utcnow
from gateway.routing.replicas import GuardLimits, ReplicaPool
from gateway.routing.replicated import ReplicatedBackend
from tests.fakes import FakeBackend


class SlowBackend(FakeBackend):
    """Answers after ``delay`` seconds, counting its calls."""

    def __init__(self, kind: str, delay: float = 0.0) -> None:
        super().__init__(kind)
        self.delay = delay

    async def infer(self, target, request):
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().infer(target, request)


def record(rid: str, *ready: tuple[str, int], stack: str = "torchserve", address: str = "", age: float = 0.0,
           states: dict | None = None) -> ReplicaRecord:  # fmt: skip
    now = utcnow() - timedelta(seconds=age)
    versions = [ReplicaVersion(m, v, "ready", "", now) for m, v in ready]
    versions += [ReplicaVersion(m, v, s, e, now) for (m, v), (s, e) in (states or {}).items()]
    return ReplicaRecord(rid, stack, address or f"http://{rid}:8080", rid, now, now, tuple(versions))


class Table:
    """The registry's replica table, as the pool reads it."""

    def __init__(self, *records: ReplicaRecord) -> None:
        self.records = list(records)
        self.down = False

    def replicas(self, stack=None):
        if self.down:
            raise RegistryUnavailable("registry at test: refused")
        return list(self.records)


def make_pool(**kwargs) -> tuple[ReplicaPool, dict[str, SlowBackend]]:
    made: dict[str, SlowBackend] = {}

    def adapter(stack, address):
        made[address] = SlowBackend(stack)
        return made[address]

    return ReplicaPool(["torchserve"], adapter, **kwargs), made


def target(backend, version: int = 1) -> Target:
    return Target("mlp", version, backend)


def request() -> InferenceRequest:
    return InferenceRequest({"x": np.ones((1, 2), np.float32)})


async def test_the_pool_holds_live_replicas_of_its_stacks_and_what_each_has_ready():
    pool, made = make_pool()
    await pool.apply([record("ts-0", ("mlp", 1)), record("ts-1", ("mlp", 1), ("mlp", 2)),
                      record("tf-0", ("mlp", 1), stack="tfserving")])  # fmt: skip
    assert [r.replica_id for r in pool.live("torchserve")] == ["ts-0", "ts-1"]
    assert pool.live("tfserving") == []  # not an agent-run stack of this pool
    assert {r.replica_id for r in pool.ready("torchserve", "mlp", 1)} == {"ts-0", "ts-1"}
    assert [r.replica_id for r in pool.ready("torchserve", "mlp", 2)] == ["ts-1"]
    assert set(made) == {"http://ts-0:8080", "http://ts-1:8080"}
    assert all(b.started for b in made.values())


async def test_a_replica_whose_heartbeat_stops_moving_leaves_after_the_ttl_and_rejoins_when_it_beats():
    pool, made = make_pool(ttl=0.3)
    beating, silent = record("ts-0", ("mlp", 1)), record("ts-1", ("mlp", 1))
    await pool.apply([beating, silent])
    await asyncio.sleep(0.35)
    await pool.apply([record("ts-0", ("mlp", 1)), silent])  # ts-0 beat again, ts-1 did not
    assert [r.replica_id for r in pool.live("torchserve")] == ["ts-0"]
    await asyncio.sleep(0.05)
    assert made["http://ts-1:8080"].closed  # its adapter is closed once idle
    await pool.apply([record("ts-0", ("mlp", 1)), record("ts-1", ("mlp", 1))])
    assert [r.replica_id for r in pool.live("torchserve")] == ["ts-0", "ts-1"]


async def test_a_long_silent_replica_never_joins():
    pool, _ = make_pool(ttl=5)
    await pool.apply([record("ts-0", ("mlp", 1), age=60)])
    assert pool.live("torchserve") == []


async def test_a_registry_outage_leaves_the_pool_as_it_was_and_gives_each_replica_a_fresh_ttl():
    pool, _ = make_pool(ttl=0.3)
    table = Table(record("ts-0", ("mlp", 1)))
    assert await pool.refresh(table)
    table.down = True
    await asyncio.sleep(0.35)
    assert not await pool.refresh(table)
    assert [r.replica_id for r in pool.live("torchserve")] == ["ts-0"]  # routing from memory
    table.down = False  # back, with the heartbeat not moved yet (the agent was cut off too)
    assert await pool.refresh(table)
    assert [r.replica_id for r in pool.live("torchserve")] == ["ts-0"]


async def test_requests_spread_evenly_over_two_equal_replicas():
    pool, made = make_pool()
    for backend in await _two(pool, made):
        backend.delay = 0.002
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)

    async def client(n: int) -> None:
        for _ in range(n):
            await replicated.infer(target(replicated), request())

    await asyncio.gather(*(client(50) for _ in range(8)))
    counts = [len(b.requests) for b in made.values()]
    assert sum(counts) == 400
    assert all(0.4 <= c / 400 <= 0.6 for c in counts), counts


async def _two(pool, made):
    await pool.apply([record("ts-0", ("mlp", 1)), record("ts-1", ("mlp", 1))])
    return list(made.values())


async def test_a_call_that_never_reached_its_replica_goes_once_to_another():
    pool, made = make_pool()
    dead, alive = await _two(pool, made)
    dead.fail = BackendUnreached("torchserve mlp v1: cannot connect (refused)")
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)
    for _ in range(20):
        result = await replicated.infer(target(replicated), request())
        assert result is not None
    assert len(alive.requests) == 20


async def test_a_replica_that_lost_the_version_sends_the_call_to_another():
    pool, made = make_pool()
    emptied, holding = await _two(pool, made)
    emptied.fail = VersionMissing("torchserve mlp v1: Model not found (HTTP 404)")  # restarted empty, not yet reported
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)
    for _ in range(10):
        await replicated.infer(target(replicated), request())
    assert len(holding.requests) == 10


async def test_a_call_that_may_have_reached_its_replica_is_not_sent_again():
    pool, made = make_pool()
    for backend in await _two(pool, made):
        backend.fail = BackendUnavailable("torchserve mlp v1: connection closed by the server")
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)
    with pytest.raises(BackendUnavailable):
        await replicated.infer(target(replicated), request())
    assert sum(len(b.requests) for b in made.values()) == 1


async def test_a_replica_whose_circuit_opened_gets_no_calls_while_another_is_closed():
    pool, made = make_pool(limits=GuardLimits(failure_threshold=2, cooldown=60))
    broken, healthy = await _two(pool, made)
    broken.fail = BackendError("torchserve mlp v1: boom")  # not a reachability failure: no retry
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)
    replica = next(r for r in pool.live("torchserve") if r.backend is broken)
    for _ in range(2):
        with pytest.raises(BackendError):
            await replica.call(lambda b: b.infer(target(b), request()))
    broken.fail = BackendUnavailable("timed out")
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            await replica.call(lambda b: b.infer(target(b), request()))
    assert replica.open
    healthy_before = len(healthy.requests)
    for _ in range(10):
        await replicated.infer(target(replicated), request())
    assert len(healthy.requests) == healthy_before + 10
    up = metrics.REGISTRY.get_sample_value("gateway_replica_up", {"stack": "torchserve", "replica": replica.replica_id})
    assert up == 0


async def test_no_ready_replica_is_a_503_naming_each_replica_and_its_state():
    pool, _ = make_pool()
    await pool.apply([record("ts-0", states={("mlp", 2): ("loading", "")}),
                      record("ts-1", states={("mlp", 2): ("failed", "no handler")})])  # fmt: skip
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)
    with pytest.raises(BackendUnavailable) as caught:
        await replicated.infer(target(replicated, 2), request())
    assert "no torchserve replica has mlp v2 ready" in caught.value.message
    assert "ts-0: loading" in caught.value.message and "ts-1: failed: no handler" in caught.value.message
    status = await replicated.status("mlp", 2)
    assert status.state == "LOADING" and status.details["replicas"] == {"ts-0": "loading", "ts-1": "failed: no handler"}


async def test_status_is_available_on_any_ready_replica_and_unknown_without_replicas():
    pool, _ = make_pool()
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)
    assert (await replicated.status("mlp", 1)).state == "UNKNOWN"
    await pool.apply([record("ts-0", ("mlp", 1)), record("ts-1", states={("mlp", 1): ("failed", "oom")})])
    assert (await replicated.status("mlp", 1)).available
    assert (await replicated.status("mlp", 3)).state == "NOT_FOUND"


async def test_per_replica_metrics_follow_the_pool():
    pool, _ = make_pool(ttl=0.2)
    await pool.apply([record("m-0", ("mlp", 1)), record("m-1", ("mlp", 1))])  # ids no other test uses
    replicated = ReplicatedBackend("torchserve", pool, passthrough=False)
    for _ in range(6):
        await replicated.infer(target(replicated), request())
    sample = metrics.REGISTRY.get_sample_value
    counts = [
        sample("gateway_replica_request_duration_seconds_count", {"stack": "torchserve", "replica": r}) or 0
        for r in ("m-0", "m-1")
    ]  # fmt: skip (a replica that got no call has no series yet)
    assert sum(counts) == 6
    assert sample("gateway_replica_versions_ready", {"stack": "torchserve", "replica": "m-0"}) == 1
    assert sample("gateway_replica_inflight", {"stack": "torchserve", "replica": "m-0"}) == 0
    await asyncio.sleep(0.25)
    await pool.apply([record("m-0", ("mlp", 1))])  # m-1 lapsed
    assert sample("gateway_replica_up", {"stack": "torchserve", "replica": "m-1"}) is None
    assert sample("gateway_replica_up", {"stack": "torchserve", "replica": "m-0"}) == 1


def test_the_power_of_two_choices_draws_two_distinct_replicas_evenly_and_the_less_busy_wins():
    random.seed(16)
    idle = [SimpleNamespace(inflight=0, open=False, name=f"r{i}") for i in range(3)]
    picks = Counter(ReplicaPool.pick(idle).name for _ in range(30_000))  # type: ignore[arg-type, union-attr]
    assert set(picks) == {"r0", "r1", "r2"} and all(abs(n / 30_000 - 1 / 3) < 0.02 for n in picks.values()), picks
    busy = [*idle[:2], SimpleNamespace(inflight=5, open=False, name="busy")]
    picks = Counter(ReplicaPool.pick(busy).name for _ in range(3_000))  # type: ignore[arg-type, union-attr]
    assert "busy" not in picks and abs(picks["r0"] / 3_000 - 0.5) < 0.05, picks  # drawn with an idle one, it loses
    pair = idle[:2]
    picks = Counter(ReplicaPool.pick(pair, exclude=pair[0]).name for _ in range(100))  # type: ignore[arg-type, union-attr]
    assert picks == {"r1": 100}
    assert ReplicaPool.pick(pair[:1], exclude=pair[0]) is None  # type: ignore[arg-type]
