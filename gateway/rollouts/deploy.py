"""Deploying a version: fetch, unpack, validate, place, load, wait until ready, smoke, and only then route.

Each step has a name; a failure says which step failed and why, unloads what was loaded, removes
what was placed, records the attempt in the history, and leaves routing exactly as it was.
Deploying the same artifact twice is harmless: the second time only confirms the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.artifacts import ArtifactConflict, ArtifactError, ArtifactStore, Manifest
from gateway.backends.catalog import ARTIFACTS, backend_of
from gateway.core.errors import BadRequest, DeployFailed, GatewayError, RegistryDown
from gateway.core.kinds import Kind
from gateway.core.names import MODEL_RULE, is_model_name, shown
from gateway.core.types import version_number
from gateway.registry.store import Tx
from gateway.rollouts.answers import DeployAnswer
from gateway.rollouts.artifacts import Limits, digest, remove_tree, stage, stated_version, unpack
from gateway.rollouts.service import RolloutService
from gateway.rollouts.smoke import smoke
from gateway.rollouts.sources import materialise, redact
from gateway.rollouts.staging import ReplicaDeploy
from gateway.routing.replicas import ReplicaPool

log = logging.getLogger(__name__)


class Deployer:
    """Runs deploys for a ``RolloutService``; one deploy of a model at a time."""

    def __init__(
        self, service: RolloutService, artifacts: ArtifactStore | None = None, pool: ReplicaPool | None = None
    ) -> None:
        self.service = service
        self.settings = service.settings
        #: Where accepted versions are kept for the backend replicas' agents (issue 15).
        self.artifacts = artifacts
        #: The replicas of the agent-run stacks (GATEWAY_AGENT_STACKS), deployed to through the registry.
        self.replicas = ReplicaDeploy(service, pool, artifacts) if pool is not None else None
        self._locks: dict[str, asyncio.Lock] = {}

    async def deploy(
        self,
        model: str,
        upload: Path,
        version: int | None,
        canary: float | None,
        actor: str,
        *,
        source: str | None = None,
    ) -> DeployAnswer:
        """Deploy the version packed in the tar file ``upload`` (which this call deletes), or
        written into it from ``source``, a URL checked against its allow-list.

        Download, unpack and checks run before the model's lock is taken: a slow source or a
        large archive never holds up another deploy of the same model. Under the lock: the
        version number, the atomic move into the store, then load, smoke and route.
        """
        # Checked before the name reaches the store, the history or a log line.
        problem = None if is_model_name(model) else f"invalid model name {shown(model)}: {MODEL_RULE}"
        if problem is None and canary is not None and not 0 <= canary <= 100:
            problem = f"canary must be a percentage in [0, 100], got {canary}"
        if problem is not None:
            await asyncio.to_thread(upload.unlink, missing_ok=True)
            raise BadRequest(problem)
        detail: dict[str, Any] = {"requested_version": version, "canary": canary}
        work: Path | None = None
        try:
            if source is not None:
                detail["source"] = redact(source)
                try:
                    await materialise(source, upload, self.settings)
                except GatewayError as exc:
                    raise exc if isinstance(exc, DeployFailed) else _at_step("fetch", exc) from None
            work = await asyncio.to_thread(stage, self.settings, model)
            staged = await asyncio.to_thread(unpack, upload, work, Limits.of(self.settings))
            await asyncio.to_thread(upload.unlink, missing_ok=True)  # its space is needed no more
            kind = backend_of(staged)
            if kind is None:
                raise DeployFailed("validate", "found neither a .mar archive nor a saved_model.pb")
            async with self._locks.setdefault(model, asyncio.Lock()):
                return await self._deploy(model, staged, kind, version, canary, actor, detail)
        except DeployFailed as exc:
            detail.update(step=exc.step)
            await self.service.record_failure(
                actor=actor, action="deploy", model=model, message=exc.message, detail=detail
            )
            raise
        finally:
            await asyncio.to_thread(upload.unlink, missing_ok=True)
            if work is not None:
                await asyncio.to_thread(remove_tree, work)

    async def restore(self, kind: Kind) -> list[tuple[str, int]]:
        """Load again the versions the registry has available on ``kind`` that the backend lost,
        and bring its start-up file in line with the registry.

        A backend that restarts comes back with its start-up file only; this repairs what it lacks
        if the file was stale or the backend started without it. Called by the backend probe;
        returns what it loaded again. Skipped while another change to the backend runs, on any
        replica (its lock), and when the backend cannot be asked. Reads the registry under the
        lock, so a replica whose routing table lags never loads a version just retired elsewhere;
        while the registry is down it falls back to this replica's routing table.
        """
        if self.replicas is not None and kind in self.replicas.pool.stacks:
            return []  # each replica's agent loads again what its backend lost
        async with self.service.locks.try_hold(kind) as held:
            if not held:
                return []
            snapshot = None
            try:
                snapshot = await self.service.snapshot()
                keep = self.service.loaded(snapshot, kind)
            except RegistryDown:
                keep = {}  # the routing table holds exactly the available versions
                for target in self.service.router.table.targets():
                    if target.backend.kind == kind:
                        keep.setdefault(target.model, set()).add(target.version)
            backend = self.service.backends[kind]
            missing: list[tuple[str, int]] = []
            for model, versions in sorted(keep.items()):
                for version in sorted(versions):
                    status = await backend.status(model, version)
                    if status.state == "UNKNOWN":  # the backend cannot be asked: nothing to conclude
                        return []
                    if status.gone:  # NOT_FOUND after a restart, or END
                        missing.append((model, version))
            for model, version in missing:
                log.warning("%s lost %s v%d (restarted?); loading it again", kind, model, version)
                await backend.load(model, version, keep)
            if snapshot is not None:
                await self.service.write_startup(kind, snapshot)
            return missing

    async def _deploy(
        self,
        model: str,
        staged: Path,
        kind: Kind,
        version: int | None,
        canary: float | None,
        actor: str,
        detail: dict[str, Any],
    ) -> DeployAnswer:
        """Number the checked version directory ``staged``, move it into the store (or confirm
        an identical one there), then load and route it; called with the model's lock held."""
        store = self.settings.model_store
        snapshot = await self.service.snapshot()
        record = snapshot.models.get(model)
        number = self._version(staged, kind, version, record.versions if record else {}, store / model)
        detail.update(version=number, backend=kind)
        final = store / model / str(number)
        if final.exists():
            same = await asyncio.to_thread(lambda: digest(final) == digest(staged))
            if not same:
                raise DeployFailed("place", f"version {number} already exists with different content", 409)
            stored = record.versions.get(number) if record else None
            if stored is not None and stored.state == "available":
                await self._store(model, number, final)  # deployed before an artifact store was set
                if canary and record is not None:
                    await self.service.traffic(model, number, canary, record.policy.sticky_header, actor)
                return DeployAnswer(model=model, version=number, backend=kind, status="unchanged")
            created = False
        else:
            await asyncio.to_thread(_place, staged, final)
            created = True

        if self.replicas is not None and kind in self.replicas.pool.stacks:
            answer = DeployAnswer(model=model, version=number, backend=kind, status="deployed", canary=canary)
            try:
                await self.replicas.run(
                    model, number, kind, final, actor, detail,
                    store=lambda: self._store(model, number, final),
                    route=lambda: self._route(model, number, kind, canary, actor, detail.get("source"), detail),
                )  # fmt: skip
            except BaseException:
                if created:
                    await asyncio.to_thread(remove_tree, final)
                raise
            return answer
        async with self.service.locks.hold(kind):
            return await self._load_and_route(model, number, kind, canary, actor, final, created, detail)

    async def _load_and_route(
        self,
        model: str,
        number: int,
        kind: Kind,
        canary: float | None,
        actor: str,
        final: Path,
        created: bool,
        detail: dict[str, Any],
    ) -> DeployAnswer:
        """Load, wait, smoke, route, holding the backend's lock (``BackendLocks``): what must stay
        loaded is read from the registry now, so no other replica's change is lost."""
        backend = self.service.backends[kind]
        keep = self.service.loaded(await self.service.snapshot(), kind)
        stored: Manifest | None = None
        try:
            try:
                await backend.load(model, number, keep)
            except GatewayError as exc:
                raise DeployFailed("load", exc.message, exc.status_code) from None
            await self._wait_ready(model, number, kind)
            self.service.router.forget_signature(model, number)
            await smoke(backend, model, number, final, self.settings.smoke_tolerance)
            stored = await self._store(model, number, final)
            await self._route(model, number, kind, canary, actor, detail.get("source"))
            await self.service.write_startup(kind, await self.service.snapshot())
        except BaseException:
            # Unload even when the load itself failed: a refused or timed-out load may still have
            # left the version configured on the backend (a TF Serving reload that adds a model
            # fails only after the model entered the config, and one past its deadline goes on).
            try:
                await backend.unload(model, number, keep)
            except GatewayError as exc:
                log.warning("could not unload %s v%d after a failed deploy: %s", model, number, exc.message)
            if stored is not None and self.artifacts is not None:
                try:  # stored by this deploy: the number is free again for other content
                    await self.artifacts.discard(stored, final)
                except ArtifactError as exc:
                    log.warning("could not discard %s v%d from the artifact store: %s", model, number, exc)
            if created:
                await asyncio.to_thread(remove_tree, final)
            raise
        return DeployAnswer(model=model, version=number, backend=kind, status="deployed", canary=canary)

    def _version(self, source: Path, kind: Kind, asked: int | None, known: dict[int, Any], model_dir: Path) -> int:
        if asked is not None and asked < 1:
            raise DeployFailed("validate", f"version must be a positive integer, got {asked}")
        names = [p.name for p in model_dir.iterdir()] if model_dir.is_dir() else []
        on_disk = [n for n in map(version_number, names) if n is not None]
        following = max([0, *known, *on_disk]) + 1
        inside = stated_version(source, kind)
        number = version_number(inside) if inside is not None else None
        # TorchServe registers the archive under its manifest's exact string, and the gateway
        # addresses the version as str(number): the two must be the same text.
        if inside is not None and (number is None or (asked is not None and number != asked)):
            fix = asked if asked is not None else number or following
            stated = f"version {inside!r}" if inside else "no version"
            artifacts = ARTIFACTS[kind]
            raise DeployFailed(
                "validate",
                f"the archive's manifest states {stated}, but "
                + (
                    f"the deploy asks for version {asked}"
                    if number is not None
                    else f"{artifacts.server} keys versions by their exact string ('1.0' is not '1') and the "
                    "gateway addresses versions as plain integers"
                )
                + f"; rebuild it with {artifacts.rebuild_hint(fix)}",
            )
        if number is not None:
            return number
        return asked if asked is not None else following

    async def _wait_ready(self, model: str, version: int, kind: Kind) -> None:
        """Wait until the backend reports the version AVAILABLE, or fail with its last error.

        NOT_FOUND (or END without an error, a state left from an earlier unload of the same
        number) right after the load is "not yet" within the discovery grace period: TF Serving
        finds a new version of a configured model at its next file-system poll. START and LOADING
        are "not yet" until the deploy's deadline (the real server retries a failed load while it
        says LOADING); END with an error fails at once. UNKNOWN (the backend cannot be asked) is
        "not yet" too. At the deadline the deploy fails with the backend's last error message.
        """
        backend = self.service.backends[kind]
        timeout = self.settings.deploy_ready_timeout_seconds
        start = time.monotonic()
        deadline = start + timeout
        grace = start + min(self.settings.backend_discovery_grace_seconds, timeout)
        last = None
        last_error = ""
        while True:
            last = await backend.status(model, version)
            if last.error and last.state != "NOT_FOUND":  # "could not find" is no load error
                last_error = last.error
            now = time.monotonic()
            if last.available:
                return
            if last.state == "END" and last.error:
                raise DeployFailed("ready", f"{kind} could not load version {version}: {last.error}", 502)
            if last.gone and now >= grace:
                raise DeployFailed(
                    "ready",
                    f"{kind} did not find version {version} within "
                    f"{self.settings.backend_discovery_grace_seconds:g}s of loading it "
                    f"({last.state}{': ' + last.error if last.error else ''})",
                    502,
                )
            if now >= deadline:
                break
            await asyncio.sleep(min(0.25, max(0.0, deadline - now)))
        detail = f"; last error: {last_error}" if last_error else ""
        raise DeployFailed(
            "ready",
            f"{kind} did not report version {version} ready within {timeout:g}s (state {last.state}{detail})",
            504,
        )

    async def _store(self, model: str, version: int, path: Path) -> Manifest | None:
        """Keep the checked version in the artifact store, once: the same content again is a no-op,
        other content under the same number fails the deploy (409) before it is routed. The
        manifest if this call stored it (a later failure of the deploy discards it), else None."""
        if self.artifacts is None:
            return None
        try:
            manifest, created = await self.artifacts.put(model, version, path)
        except ArtifactError as exc:
            raise DeployFailed("store", str(exc), 409 if isinstance(exc, ArtifactConflict) else 503) from None
        if not created:
            return None
        log.info("stored %s v%d in %s (digest %s)", model, version, self.artifacts.description, manifest.digest)
        return manifest

    async def _route(
        self,
        model: str,
        version: int,
        kind: Kind,
        canary: float | None,
        actor: str,
        source: str | None,
        reported: dict[str, Any] | None = None,
    ) -> None:
        """Make the version available (and stable or canary), in one registry write; a staged
        version stops being staged in the same write, so its replicas never unload it."""

        def change(tx: Tx) -> None:
            tx.ensure_model(model)
            tx.upsert_version(model, version, kind, f"{model}/{version}")
            tx.unstage_version(model, version)
            record = tx.model(model)
            assert record is not None
            if "stable" not in record.labels:
                tx.set_label(model, "stable", version)  # a model's first version serves at once
                tx.message = f"version {version} ({kind}) deployed as stable"
            elif canary:
                tx.set_label(model, "canary", version)
                tx.set_policy(model, replace(record.policy, canary_version=version, canary_percent=canary))
                tx.message = f"version {version} ({kind}) deployed as canary at {canary}%"
            else:
                tx.message = f"version {version} ({kind}) deployed, available"

        try:
            await self.service.write(
                actor=actor,
                action="deploy",
                model=model,
                change=change,
                detail={"version": version, "backend": kind, "canary": canary}
                | ({"source": source} if source else {})
                | ({"replicas": reported["replicas"]} if reported and "replicas" in reported else {}),
            )
        except GatewayError as exc:
            raise DeployFailed("route", exc.message, exc.status_code) from None


def _place(staged: Path, final: Path) -> None:
    """Move a checked version directory into the store: one rename on one file system."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(final)


def _at_step(step: str, exc: GatewayError) -> DeployFailed:
    """A refusal (403, 413, 400) of a deploy step, named and recorded like any failed step."""
    return DeployFailed(step, exc.message, exc.status_code)
