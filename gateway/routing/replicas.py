"""The pool of backend replicas of the stacks run by agents (``GATEWAY_AGENT_STACKS``).

Each agent registers its replica in the registry (stack, inference address, heartbeat) and
reports every version it holds: loading, ready or failed. The pool reads that table every
``poll_seconds`` and keeps, per replica, an adapter pointed at its address (no management calls:
those stay on the replica's localhost, the agent's business), a guard (in-flight cap and circuit
breaker of its own) and the versions it reports ready.

A replica leaves the pool when its heartbeat has not moved for ``ttl`` seconds, measured on this
process's clock from when it last saw the value change (no clock skew between hosts matters), and
never while the registry cannot be read: an outage leaves the pool as it was, and each replica
gets a fresh ``ttl`` when the registry answers again (the agents were cut off too).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway import metrics
from gateway.backends.resilience import BackendGuard
from gateway.core.kinds import Kind, as_kind
from gateway.core.types import Backend
from gateway.registry import RegistryStore, RegistryUnavailable
from gateway.registry.replicas import ReplicaRecord
from gateway.registry.schema import utcnow

log = logging.getLogger(__name__)

Key = tuple[str, int]
#: Builds the adapter of one replica: (stack, inference address) -> a started-later ``Backend``.
AdapterFactory = Callable[[Kind, str], Backend]


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Each replica's guard: in-flight cap and circuit breaker (``BackendGuard``)."""

    max_inflight: int = 256
    failure_threshold: int = 5
    cooldown: float = 5.0


@dataclass(eq=False)
class Replica:
    """One backend replica as this gateway knows it."""

    replica_id: str
    stack: Kind
    address: str
    host: str
    backend: Backend
    guard: BackendGuard
    heartbeat_at: datetime
    seen_at: float  # monotonic: when this process last saw ``heartbeat_at`` move
    reports: dict[Key, tuple[str, str]] = field(default_factory=dict)
    ready: frozenset[Key] = frozenset()
    #: Its in-flight gauge and call histogram, looked up once (not on every call).
    series: tuple[Any, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        labels = (self.stack, self.replica_id)
        self.series = (metrics.REPLICA_INFLIGHT.labels(*labels), metrics.REPLICA_DURATION.labels(*labels))

    @property
    def inflight(self) -> int:
        return self.guard.inflight

    @property
    def open(self) -> bool:
        """Failing fast now (its circuit is open and not yet due for a probe call)."""
        return self.guard.state == "open"

    def state_of(self, key: Key) -> str:
        """What the replica reports about a version: ``ready``, ``loading``, ``failed: <why>`` or
        ``absent`` (no report yet)."""
        state, error = self.reports.get(key, ("absent", ""))
        return f"{state}: {error}" if error else state

    async def call(self, run: Callable[[Backend], Awaitable[object]]) -> object:
        """Run ``run`` on this replica's adapter through its guard, measured."""
        inflight, duration = self.series
        inflight.inc()
        start = time.perf_counter()
        try:
            return await self.guard.call(lambda: run(self.backend))
        except Exception as exc:
            if getattr(exc, "status_code", 500) >= 500:
                metrics.REPLICA_ERRORS.labels(self.stack, self.replica_id).inc()
            raise
        finally:
            inflight.dec()
            duration.observe(time.perf_counter() - start)


class ReplicaPool:
    """The live replicas of the agent-run stacks, and which of them hold which version ready."""

    def __init__(
        self,
        stacks: Iterable[Kind],
        adapter: AdapterFactory,
        *,
        ttl: float = 15.0,
        limits: GuardLimits | None = None,
    ) -> None:
        self.stacks: frozenset[Kind] = frozenset(stacks)
        self.ttl = ttl
        self._adapter = adapter
        self._limits = limits or GuardLimits()
        self._replicas: dict[str, Replica] = {}
        self._ready: dict[tuple[Kind, str, int], tuple[Replica, ...]] = {}
        self._outage = False
        self._closing: set[asyncio.Task[None]] = set()

    # --- what requests and deploys read --------------------------------------------------------
    def ready(self, stack: Kind, model: str, version: int) -> tuple[Replica, ...]:
        """The live replicas of ``stack`` that report ``model`` v``version`` ready."""
        return self._ready.get((stack, model, version), ())

    def live(self, stack: Kind) -> list[Replica]:
        """Every live replica of ``stack``, by id."""
        return [r for r in self._replicas.values() if r.stack == stack]

    def describe(self, stack: Kind, key: Key) -> str:
        """Each live replica of ``stack`` with its state of ``key``, for error messages."""
        found = self.live(stack)
        if not found:
            return f"no live {stack} replica is registered"
        return "; ".join(f"{r.replica_id}: {r.state_of(key)}" for r in found)

    @staticmethod
    def pick(candidates: tuple[Replica, ...], exclude: Replica | None = None) -> Replica | None:
        """The less busy of two replicas drawn at random (the power of two choices), skipping
        ``exclude`` and, while others are left, replicas whose circuit is open."""
        pool = [r for r in candidates if r is not exclude]
        closed = [r for r in pool if not r.open]
        pool = closed or pool
        if len(pool) <= 1:
            return pool[0] if pool else None
        a, b = random.sample(pool, 2)  # two distinct ones, in random order: the first wins a tie
        return b if b.inflight < a.inflight else a

    # --- keeping up with the registry ----------------------------------------------------------
    async def refresh(self, registry: RegistryStore) -> bool:
        """Read the replica table and apply it; False (pool unchanged) while the registry is down."""
        try:
            records = await asyncio.to_thread(registry.replicas)
        except RegistryUnavailable as exc:
            if not self._outage:
                log.warning("replica table unreadable (%s); routing over the replicas known", exc)
            self._outage = True
            return False
        await self.apply(records)
        return True

    async def apply(self, records: Iterable[ReplicaRecord]) -> None:
        """Make the pool what ``records`` (a read of the replica table) say, expiring silent replicas."""
        now = time.monotonic()
        if self._outage:  # the agents could not write their heartbeats either: a fresh ttl each
            log.warning("replica table readable again")
            for known in self._replicas.values():
                known.seen_at = now
            self._outage = False
        wall = utcnow()
        seen: set[str] = set()
        for record in records:
            if record.stack not in self.stacks:
                continue
            found = self._replicas.get(record.replica_id)
            if found is not None and found.address != record.address:
                self._drop(found, "it moved to another address")
                found = None
            if found is None:
                age = (wall - record.heartbeat_at).total_seconds()
                if age >= self.ttl:
                    continue  # long silent: not (back) in the pool until it beats again
                replica = await self._add(record, now - max(0.0, age))
            else:
                replica = found
                if record.heartbeat_at != replica.heartbeat_at:
                    replica.heartbeat_at, replica.seen_at = record.heartbeat_at, now
            if now - replica.seen_at >= self.ttl:
                self._drop(replica, f"no heartbeat for {self.ttl:g}s")
                continue
            seen.add(record.replica_id)
            replica.reports = {(v.model, v.version): (v.state, v.error) for v in record.versions}
            replica.ready = frozenset(k for k, (state, _) in replica.reports.items() if state == "ready")
            metrics.REPLICA_VERSIONS_READY.labels(replica.stack, replica.replica_id).set(len(replica.ready))
        for rid in [rid for rid in self._replicas if rid not in seen]:
            self._drop(self._replicas[rid], "it is no longer registered or its heartbeat lapsed")
        index: dict[tuple[Kind, str, int], list[Replica]] = {}
        for replica in self._replicas.values():
            for model, version in replica.ready:
                index.setdefault((replica.stack, model, version), []).append(replica)
        self._ready = {key: tuple(found) for key, found in index.items()}  # one swap

    async def _add(self, record: ReplicaRecord, seen_at: float) -> Replica:
        stack = as_kind(record.stack)
        assert stack is not None  # apply() keeps only this pool's stacks
        backend = self._adapter(stack, record.address)
        await backend.start()
        labels = (stack, record.replica_id)
        up = metrics.REPLICA_UP.labels(*labels)
        guard = BackendGuard(
            f"{stack} replica {record.replica_id}",
            max_inflight=self._limits.max_inflight,
            failure_threshold=self._limits.failure_threshold,
            cooldown=self._limits.cooldown,
            up=up.set,
        )
        up.set(1)
        replica = Replica(record.replica_id, stack, record.address, record.host, backend, guard,
                          record.heartbeat_at, seen_at)  # fmt: skip
        self._replicas[record.replica_id] = replica
        self._publish()
        log.info("replica %s (%s at %s on %s) joined the pool", record.replica_id, stack, record.address, record.host)
        return replica

    def _publish(self) -> None:
        """Tell the metrics which replicas are in the pool (the multiprocess scrape needs it)."""
        metrics.REPLICAS_PRESENT.set((r.stack, r.replica_id) for r in self._replicas.values())

    def _drop(self, replica: Replica, why: str) -> None:
        """Take ``replica`` out of the pool; its adapter closes once its calls are done."""
        if self._replicas.get(replica.replica_id) is replica:
            del self._replicas[replica.replica_id]
            self._publish()
        log.warning("replica %s (%s at %s) left the pool: %s", replica.replica_id, replica.stack, replica.address, why)
        for metric in metrics.REPLICA_METRICS:
            try:
                metric.remove(replica.stack, replica.replica_id)
            except KeyError:
                pass
        task = asyncio.get_running_loop().create_task(self._close_when_idle(replica))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_when_idle(self, replica: Replica, patience: float = 60.0) -> None:
        """Close at once when idle, else after ``patience`` (calls in flight end by their deadline)."""
        if replica.inflight:
            await asyncio.sleep(patience)
        await replica.backend.close()

    async def run(self, registry: RegistryStore, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh(registry)
            except Exception:  # the pool must keep following the registry
                log.exception("refreshing the replica pool failed")

    async def close(self) -> None:
        """Close every adapter (at shutdown)."""
        for replica in list(self._replicas.values()):
            await replica.backend.close()
        self._replicas.clear()
        self._ready = {}
        for task in list(self._closing):
            task.cancel()
