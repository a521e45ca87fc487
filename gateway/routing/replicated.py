"""``ReplicatedBackend``: one stack served by many replicas, behind the one ``Backend`` interface.

The routing table's targets of an agent-run stack hold this backend; each call goes to one of the
replicas that report the version ready (``ReplicaPool.pick``: the less busy of two random ones),
through that replica's own guard. A call that never reached its replica (``BackendUnreached``:
the connection could not be made), or that its replica answered with "no such version" (a backend
that restarted empty before its agent reported it), is sent once more to another replica, within a
retry budget; any other failure is answered as it is (the replica may have done the work).

Loading and unloading are the agents' business: they converge each replica from the registry, so
``load``, ``unload`` and ``set_default`` do nothing here, and there is no start-up file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TypeVar, cast

from gateway.backends.resilience import RetryBudget
from gateway.core.errors import BackendUnavailable, BackendUnreached, GatewayError, VersionMissing
from gateway.core.kinds import Kind
from gateway.core.tensors import Signature
from gateway.core.types import Backend, Forwarder, InferenceRequest, InferenceResult, Passthrough, Target, VersionStatus
from gateway.routing.replicas import Replica, ReplicaPool

T = TypeVar("T")


class ReplicatedBackend:
    """The ``Backend`` of a stack whose replicas are run by agents."""

    def __init__(self, kind: Kind, pool: ReplicaPool, *, passthrough: bool, retry_ratio: float = 0.1) -> None:
        self.kind: Kind = kind
        self.pool = pool
        self.retries = RetryBudget(retry_ratio)
        self._passthrough = passthrough

    @property
    def passthrough(self) -> Forwarder | None:
        return self if self._passthrough else None

    async def _call(self, target: Target, run: Callable[[Backend], Awaitable[T]]) -> T:
        candidates = self.pool.ready(self.kind, target.model, target.version)
        key = (target.model, target.version)
        if not candidates:
            raise BackendUnavailable(
                f"no {self.kind} replica has {target.model} v{target.version} ready "
                f"({self.pool.describe(self.kind, key)})"
            )
        self.retries.earn()
        tried: Replica | None = None
        while True:
            replica = ReplicaPool.pick(candidates, exclude=tried)
            assert replica is not None  # candidates is not empty, and only one is excluded
            try:
                return cast(T, await replica.call(run))
            except (BackendUnreached, VersionMissing):
                # Never reached it, or it does not hold the version (its backend restarted empty
                # and its agent has not said so yet): the model did not run, another replica may.
                if tried is not None or len(candidates) < 2 or not self.retries.spend():
                    raise
                tried = replica

    async def infer(self, target: Target, request: InferenceRequest) -> InferenceResult:
        return await self._call(target, lambda backend: backend.infer(target, request))

    async def forward(self, target: Target, request: Passthrough) -> InferenceResult:
        async def run(backend: Backend) -> InferenceResult:
            forwarder = backend.passthrough
            if forwarder is None:  # the stack's adapters all take bodies, or none does
                raise BackendUnavailable(f"{self.kind} replica adapter takes no pass-through bodies")
            return await forwarder.forward(target, request)

        return await self._call(target, run)

    async def signature(self, model: str, version: int) -> Signature | None:
        """As the first ready replica that describes it says."""
        for replica in self.pool.ready(self.kind, model, version):
            try:
                found = await replica.backend.signature(model, version)
            except GatewayError:
                continue
            if found is not None:
                return found
        return None

    async def status(self, model: str, version: int) -> VersionStatus:
        """AVAILABLE on any ready replica; else what the replicas report (``details`` per replica).
        UNKNOWN when no replica of the stack is live."""
        key = (model, version)
        live = self.pool.live(self.kind)
        details: dict[str, object] = {"replicas": {r.replica_id: r.state_of(key) for r in live}}
        if not live:
            return VersionStatus(version, "UNKNOWN", self.pool.describe(self.kind, key), details)
        reports = [r.reports.get(key) for r in live]
        states = {report[0] for report in reports if report is not None}
        if "ready" in states:
            return VersionStatus(version, "AVAILABLE", "", details)
        if "loading" in states:
            return VersionStatus(version, "LOADING", "", details)
        errors = [f"{r.replica_id}: {report[1]}" for r, report in zip(live, reports, strict=True) if report]
        if errors:
            return VersionStatus(version, "END", "; ".join(errors), details)
        return VersionStatus(version, "NOT_FOUND", "", details)

    async def load(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Nothing: the agents load what the registry has staged or available."""

    async def unload(self, model: str, version: int, keep: Mapping[str, Collection[int]]) -> None:
        """Nothing: the agents unload what the registry no longer wants."""

    def write_startup(self, keep: Mapping[str, Collection[int]], defaults: Mapping[str, int]) -> bool:
        return False

    async def set_default(self, model: str, version: int) -> None:
        """Nothing: the gateway addresses every replica by explicit version."""

    async def start(self) -> None:
        """Nothing: the pool opens each replica's adapter when it joins."""

    async def close(self) -> None:
        await self.pool.close()
