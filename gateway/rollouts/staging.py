"""Deploying to a stack whose replicas are run by agents (``GATEWAY_AGENT_STACKS``).

The gateway never loads anything on such a replica itself. It stores the version in the artifact
store, marks it *staged* in the registry (the agents load staged versions as well as available
ones), waits until ``min_ready`` live replicas report it ready (the model's setting; by default
every live replica of the stack, at least one), smoke-tests it on every replica that holds it
ready, and only then makes it available and routes it, in one registry write that also ends its
staging. A failure at any step ends the staging (the agents unload it), discards what this deploy
stored, and says which replica failed and why; routing is as it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.artifacts import ArtifactError, ArtifactStore, Manifest
from gateway.core.errors import DeployFailed, GatewayError
from gateway.core.kinds import Kind
from gateway.registry import RegistryUnavailable
from gateway.registry.schema import utcnow
from gateway.registry.store import Tx
from gateway.rollouts.service import RolloutService
from gateway.rollouts.smoke import smoke
from gateway.routing.replicas import Replica, ReplicaPool

log = logging.getLogger(__name__)


class ReplicaDeploy:
    """The deploy steps after the version is placed, for an agent-run stack."""

    def __init__(self, service: RolloutService, pool: ReplicaPool, artifacts: ArtifactStore | None) -> None:
        self.service = service
        self.pool = pool
        self.artifacts = artifacts
        self.settings = service.settings

    async def run(
        self,
        model: str,
        version: int,
        kind: Kind,
        path: Path,
        actor: str,
        detail: dict[str, Any],
        *,
        store: Callable[[], Awaitable[Manifest | None]],
        route: Callable[[], Awaitable[None]],
    ) -> None:
        """Store, stage, wait for ``min_ready``, smoke each ready replica, route; ``detail`` (the
        deploy's history detail) gets each replica's state of the version."""
        if self.artifacts is None:
            raise DeployFailed("store", f"{kind} replicas are run by agents, which need an artifact store", 503)
        stored: Manifest | None = None
        staged = False
        try:
            stored = await store()
            await self._stage(model, version, kind, actor)
            staged = True
            ready = await self._wait(model, version, kind, detail)
            self.service.router.forget_signature(model, version)
            tolerance = self.settings.smoke_tolerance
            for replica in ready:
                await smoke(replica.backend, model, version, path, tolerance, f"replica {replica.replica_id}")
            await route()
        except BaseException:
            if staged:
                try:
                    await asyncio.to_thread(self.service.registry.unstage, model, version)
                except RegistryUnavailable as exc:  # the next deploy of the number replaces the row
                    log.warning("could not end the staging of %s v%d: %s", model, version, exc)
            if stored is not None:
                try:
                    await self.artifacts.discard(stored, path)
                except ArtifactError as exc:
                    log.warning("could not discard %s v%d from the artifact store: %s", model, version, exc)
            raise

    async def sweep(self, max_age: float) -> list[tuple[str, int]]:
        """End the stagings older than ``max_age`` seconds on this pool's stacks: their deploy
        died with its gateway (a deploy in progress ends its own staging within its deadline), and
        its agents would otherwise keep the version loaded for good. Returns what it ended."""
        now = utcnow()
        ended: list[tuple[str, int]] = []
        for staged in await asyncio.to_thread(self.service.registry.staged):
            if staged.backend in self.pool.stacks and (now - staged.staged_at).total_seconds() > max_age:
                if await asyncio.to_thread(self.service.registry.unstage, staged.model, staged.version):
                    log.warning("ended the staging of %s v%d by %s at %s: its deploy never finished",
                                staged.model, staged.version, staged.actor, staged.staged_at)  # fmt: skip
                    ended.append((staged.model, staged.version))
        return ended

    async def sweep_forever(self, interval: float = 60.0) -> None:
        """``sweep`` every ``interval`` seconds, with a deploy's longest run as the age limit."""
        settings = self.settings
        max_age = (
            settings.deploy_ready_timeout_seconds
            + max(settings.torchserve_timeout_seconds, settings.tfserving_timeout_seconds)
            + interval
        )
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep(max_age)
            except RegistryUnavailable:
                pass  # the next round tries again
            except Exception:  # the sweep must keep running
                log.exception("sweeping stale stagings failed")

    async def _stage(self, model: str, version: int, kind: Kind, actor: str) -> None:
        def change(tx: Tx) -> None:
            tx.stage_version(model, version, kind)
            tx.message = f"version {version} ({kind}) staged: the {kind} replicas' agents load it"

        try:
            await self.service.write(actor=actor, action="stage", model=model, change=change,
                                     detail={"version": version, "backend": kind})  # fmt: skip
        except GatewayError as exc:
            raise DeployFailed("stage", exc.message, exc.status_code) from None

    async def _min_ready(self, model: str) -> int | None:
        record = (await self.service.snapshot()).models.get(model)
        return record.policy.min_ready if record is not None else None

    async def _wait(self, model: str, version: int, kind: Kind, detail: dict[str, Any]) -> list[Replica]:
        """Until ``min_ready`` live replicas report the version ready; fail at once when the
        replicas that failed to load it leave too few, or at the deploy's deadline."""
        key = (model, version)
        asked = await self._min_ready(model)
        timeout = self.settings.deploy_ready_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            await self.pool.refresh(self.service.registry)
            live = self.pool.live(kind)
            need = asked if asked is not None else max(1, len(live))
            ready = [r for r in live if key in r.ready]
            failed = [r for r in live if r.reports.get(key, ("",))[0] == "failed"]
            detail["replicas"] = {r.replica_id: r.state_of(key) for r in live}
            if live and len(ready) >= need:
                return ready
            rule = f"min_ready {asked}" if asked is not None else "min_ready: every live replica"
            if failed and len(live) - len(failed) < need:
                why = "; ".join(f"replica {r.replica_id} ({r.host}): {r.reports[key][1]}" for r in failed)
                raise DeployFailed(
                    "ready",
                    f"{len(failed)} of {len(live)} {kind} replicas failed to load version {version}, "
                    f"{need} must hold it ready ({rule}): {why}",
                    502,
                )
            if time.monotonic() >= deadline:
                raise DeployFailed(
                    "ready",
                    f"{len(ready)} of {len(live)} live {kind} replicas held version {version} ready within "
                    f"{timeout:g}s, {need} needed ({rule}): {self.pool.describe(kind, key)}",
                    504,
                )
            await asyncio.sleep(0.25)
