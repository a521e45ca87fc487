"""The rollout service: every operation that changes routing, each one audited in the history.

Writes go through the registry in one transaction each; then the router rebuilds its table, and
other replicas follow through the registry's change notification. Routing changes (promote,
rollback, traffic, shadow, label) never touch a backend, so they are instant: each is a command
whose new routing state ``gateway.rollouts.plan`` computes (a pure function, checked with the
registry's rules) and ``route`` writes. Deploy and retire do touch one, and a failing step leaves
routing exactly as it was. Commands answer typed values (``answers``); the read views are in
``views`` and the state document in ``state``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from gateway import metrics
from gateway.core.errors import BadRequest, Conflict, GatewayError, NotFound, RegistryDown
from gateway.core.names import require_model_name
from gateway.core.types import Backend
from gateway.registry.guardspec import GuardSpec, guard_thresholds
from gateway.registry.records import ModelRecord, RegistryInvalid, RegistryUnavailable, Snapshot
from gateway.registry.store import RegistryStore, Tx
from gateway.rollouts.answers import (
    LabelAnswer,
    MinReadyAnswer,
    RetireAnswer,
    ShadowAnswer,
    StableAnswer,
    TrafficAnswer,
)
from gateway.rollouts.exclusive import BackendLocks
from gateway.rollouts.plan import (
    Command,
    CutCanary,
    Plan,
    Promote,
    Rollback,
    RoutingState,
    SetLabel,
    SetMinReady,
    SetShadow,
    SetTraffic,
    available,
    plan,
    write_state,
)
from gateway.rollouts.startup import loaded_versions, stable_versions, sync_defaults, write_startup
from gateway.routing.guard import CanaryGuard
from gateway.routing.router import Router
from gateway.routing.shadow import ShadowRunner
from gateway.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
Detail = dict[str, Any] | None


class RolloutService:
    """Deploy, promote, roll back, split, shadow, label and retire model versions."""

    def __init__(
        self,
        settings: Settings,
        registry: RegistryStore,
        router: Router,
        backends: Mapping[str, Backend],
        shadow: ShadowRunner,
    ) -> None:
        self.guard = CanaryGuard(self.trip_guard)
        self.settings = settings
        self.registry = registry
        self.router = router
        self.backends = dict(backends)
        self.shadow = shadow
        self.store = settings.model_store
        self.locks = BackendLocks(registry, settings.backend_lock_timeout_seconds)

    # --- registry access -------------------------------------------------------------------
    async def read(self, fn: Callable[[], T]) -> T:
        """Run a blocking registry call in a thread; an unreachable registry is a 503."""
        try:
            return await asyncio.to_thread(fn)
        except RegistryUnavailable as exc:
            raise RegistryDown(f"registry unavailable, nothing was changed: {exc}") from None

    async def snapshot(self) -> Snapshot:
        return await self.read(self.registry.snapshot)

    async def refresh(self) -> None:
        """Rebuild this replica's routing table from the registry."""
        await self.router.apply(await self.snapshot())

    async def write(
        self,
        *,
        actor: str,
        action: str,
        model: str | None,
        change: Callable[[Tx], None],
        message: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Run ``change`` in one registry transaction (with its history row), then reroute."""

        def run() -> None:
            with self.registry.transaction(
                actor=actor, action=action, model=model, message=message, detail=detail or {}
            ) as tx:
                change(tx)

        before = stable_versions(self.router)
        try:
            await self.read(run)
        except RegistryInvalid as exc:  # the registry's own validation, and only that: a clear 400
            raise BadRequest(str(exc)) from None
        metrics.ROLLOUT_EVENTS.labels(model or "*", action).inc()
        await self.refresh()
        moved = [name for name, version in stable_versions(self.router).items() if before.get(name) != version]
        await sync_defaults(self.router, moved)
        await self.sync_startup_files()

    async def record_failure(
        self, *, actor: str, action: str, model: str | None, message: str, detail: dict[str, Any]
    ) -> None:
        """Put a failed attempt in the history; routing is unchanged."""
        try:
            await self.read(
                lambda: self.registry.record(
                    actor=actor, action=action, model=model, outcome="failed", message=message, detail=detail
                )
            )
        except RegistryDown:
            log.error("could not record failed %s of %s: registry unavailable", action, model)

    @staticmethod
    def _model(tx: Tx, name: str) -> ModelRecord:
        record = tx.model(name)
        if record is None:
            raise NotFound(f"model '{name}' not found")
        return record

    def loaded(self, snapshot: Snapshot, backend: str) -> dict[str, set[int]]:
        """Every version of ``backend`` that must stay loaded: the registry's available ones."""
        return loaded_versions(snapshot, backend)

    async def write_startup(self, kind: str, snapshot: Snapshot) -> None:
        """Make ``kind``'s start-up file say what ``snapshot`` has available (hold its lock)."""
        await write_startup(kind, self.backends[kind], snapshot)

    async def sync_startup_files(self) -> None:
        """Bring every backend's start-up file in line with the registry, skipping a backend whose
        lock is held: its holder writes the file when it is done (and the probe catches up)."""
        for kind in sorted(self.backends):
            async with self.locks.try_hold(kind) as held:
                if held:
                    await self.write_startup(kind, await self.snapshot())

    # --- routing operations (no backend involved) ----------------------------------------------
    async def route(
        self, model: str, command: Command, *, actor: str, action: str, message: str = "", detail: Detail = None
    ) -> Plan:
        """Plan ``command`` on the model as the registry holds it and write the planned state, in
        one transaction; the plan's message and detail (if any) go to the history."""
        planned: list[Plan] = []

        def change(tx: Tx) -> None:
            record = self._model(tx, model)
            step = plan(record, command)
            write_state(tx, model, RoutingState.of(record), step.state)
            tx.message = step.message or tx.message
            if step.detail is not None:
                tx.detail = step.detail
            planned.append(step)

        await self.write(actor=actor, action=action, model=model, change=change, message=message, detail=detail)
        return planned[-1]

    async def promote(self, model: str, version: int | None, actor: str) -> StableAnswer:
        """``stable`` moves to the canary (or ``version``); the canary share goes to 0."""
        done = await self.route(model, Promote(version), actor=actor, action="promote")
        return StableAnswer(model=model, **done.facts)

    async def rollback(self, model: str, actor: str) -> StableAnswer:
        """``stable`` moves back to the previous stable version, still loaded; canary share 0."""
        done = await self.route(model, Rollback(), actor=actor, action="rollback")
        return StableAnswer(model=model, **done.facts)

    async def traffic(
        self,
        model: str,
        canary: int | None,
        percent: float,
        sticky_header: str | None,
        actor: str,
        guard: GuardSpec | dict[str, Any] | None = None,
    ) -> TrafficAnswer:
        """Send ``percent`` of the requests that name no version to ``canary``, optionally guarded."""
        try:
            thresholds = guard_thresholds(guard)  # the registry's check, before the history's detail
        except RegistryInvalid as exc:
            raise BadRequest(str(exc)) from None
        detail = {"canary": canary, "percent": percent, "sticky_header": sticky_header, "guard": thresholds}
        command = SetTraffic(canary, percent, sticky_header, thresholds)
        await self.route(model, command, actor=actor, action="traffic", detail=detail)
        if canary is not None:
            self.guard.reset(model, canary)
        return TrafficAnswer(model=model, canary=canary, percent=percent if canary else 0.0, guard=thresholds)

    async def trip_guard(self, model: str, canary: int, reason: str) -> None:
        """The canary crossed a guard threshold: its share goes to 0, the reason to the history."""
        log.warning("guard tripped for %s canary v%d: %s", model, canary, reason)
        try:
            await self.route(
                model,
                CutCanary(canary),
                actor="gateway",
                action="guard",
                message=f"canary {canary} share set to 0: {reason}",
                detail={"canary": canary, "reason": reason},
            )
        except GatewayError as exc:
            log.error("could not apply the guard for %s: %s", model, exc.message)

    async def set_shadow(self, model: str, version: int | None, percent: float, actor: str) -> ShadowAnswer:
        """Copy ``percent`` of the model's live requests to ``version`` (None: shadow off)."""
        detail = {"version": version, "percent": percent}
        await self.route(model, SetShadow(version, percent), actor=actor, action="shadow", detail=detail)
        return ShadowAnswer(model=model, shadow=version, percent=percent if version else 0.0)

    async def label(self, model: str, name: str, version: int, actor: str) -> LabelAnswer:
        """Point label ``name`` at ``version``."""
        await self.route(model, SetLabel(name, version), actor=actor, action="label")
        return LabelAnswer(model=model, label=name, version=version)

    async def set_min_ready(self, model: str, min_ready: int | None, actor: str) -> MinReadyAnswer:
        """How many of the stack's replicas must have a version ready before a deploy routes it
        (None: all current replicas, at least one)."""
        await self.route(model, SetMinReady(min_ready), actor=actor, action="min_ready")
        return MinReadyAnswer(model=model, min_ready=min_ready)

    # --- backend operations -----------------------------------------------------------------
    async def retire(self, model: str, version: int, actor: str) -> RetireAnswer:
        """Unload a version; refused while a label, the traffic or shadow policy, or rollback needs it."""
        require_model_name(model)  # before the snapshot: a clear 400, never a query or a log line
        record = (await self.snapshot()).models.get(model)
        if record is None:
            raise NotFound(f"model '{model}' not found")
        available(record, version)
        async with self.locks.hold(record.versions[version].backend):
            return await self._retire(model, version, actor)

    async def _retire(self, model: str, version: int, actor: str) -> RetireAnswer:
        snapshot = await self.snapshot()  # read under the backend's lock: nobody changes it now
        record = snapshot.models.get(model)
        if record is None:
            raise NotFound(f"model '{model}' not found")
        available(record, version)
        users = [f"label '{n}'" for n, v in sorted(record.labels.items()) if v == version]
        if record.policy.canary_version == version:
            users.append("the canary traffic policy")
        if record.policy.shadow_version == version:
            users.append("the shadow policy")
        kept = record.policy.stable_history[-(self.settings.keep_stable_versions - 1) :]
        if self.settings.keep_stable_versions > 1 and version in kept:
            users.append(f"rollback (the last {self.settings.keep_stable_versions} stable versions stay loaded)")
        if users:
            raise Conflict(f"model '{model}' version {version} is in use by {', '.join(users)}; not retired")
        stored = record.versions[version]
        backend = self.backends[stored.backend]
        keep = self.loaded(snapshot, stored.backend)
        keep.get(model, set()).discard(version)

        def change(tx: Tx) -> None:
            tx.set_version_state(model, version, "retired")

        # Stop routing first, then unload: no request is sent to a version being unloaded.
        await self.write(actor=actor, action="retire", model=model, change=change, message=f"version {version} retired")
        await self.write_startup(stored.backend, await self.snapshot())
        await sync_defaults(self.router, [model])  # the backend's default is the stable version, not this one
        try:
            await backend.unload(model, version, keep)
        except GatewayError as exc:
            log.warning("retired %s v%d but unloading it failed: %s", model, version, exc.message)
            return RetireAnswer(model=model, version=version, retired=True, unloaded=False, error=exc.message)
        return RetireAnswer(model=model, version=version, retired=True, unloaded=True)
