"""``Agent``: keeps one backend replica holding exactly the versions its stack should hold.

Beside each TorchServe or TF Serving replica, it registers the replica in the registry and keeps
its heartbeat; reads the stack's desired versions (the registry's available versions on that
stack), when the registry says it changed (``Watcher``: LISTEN/NOTIFY on PostgreSQL, a poll
anyway) and every ``poll_seconds``; pulls a missing version from the artifact store into
replica-local storage; loads and unloads it through the backend adapter's management calls on
localhost; and reports each version ``loading``, ``ready`` or ``failed`` with the error.

Every pass compares what the backend reports with what it should hold, so a backend that
restarted empty is loaded again on the next pass. ``READY_FILE`` in the replica-local storage
exists while the replica holds what it should: every version its stack serves (available) ready,
and every version a deploy in progress staged ready or failed (the deploy reports a failure and
ends the staging). Kubernetes' readiness probe of the agent's container tests it (``test -f``),
so a new or restarted replica is not counted available (rolling updates, disruption budgets)
before its versions are loaded, nor while one its stack serves has failed on it (an artifact store
down while a pod restarts: the drain that would take the next pod waits instead of leaving a
second replica empty). While the registry cannot be reached the agent
works from the last desired state it read: the replica keeps serving what it has, and reports
are kept until they can be written.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.artifacts import ArtifactError, ArtifactMissing, ArtifactStore
from gateway.core.errors import GatewayError
from gateway.core.kinds import Kind
from gateway.core.names import is_model_name
from gateway.core.types import Backend, version_number
from gateway.registry import RegistryStore, RegistryUnavailable, Watcher

log = logging.getLogger("gateway.agent")

Key = tuple[str, int]
#: In the replica-local model directory; not a model name, so never taken for a model.
READY_FILE = ".agent-ready"


class LoadFailed(Exception):
    """The backend could not make a version ready; the message says why."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Who the replica is and how often the agent looks."""

    stack: Kind
    replica_id: str
    address: str
    host: str
    model_dir: Path
    poll_seconds: float = 2.0
    heartbeat_seconds: float = 5.0
    ready_timeout_seconds: float = 300.0
    discovery_grace_seconds: float = 5.0
    retry_failed_seconds: float = 60.0


class Agent:
    """Converges one replica; ``run`` until ``stop`` is set, or ``converge`` once (tests)."""

    def __init__(self, config: AgentConfig, registry: RegistryStore, artifacts: ArtifactStore, backend: Backend):
        self.config = config
        self.registry = registry
        self.artifacts = artifacts
        self.backend = backend
        self._desired: dict[str, frozenset[int]] | None = None
        self._serving: dict[str, frozenset[int]] = {}  # of those, the available ones (not only staged)
        self._held: set[Key] = set()  # ready on the backend, as far as this agent knows
        self._failed: dict[Key, float] = {}  # when a failed version may be tried again (monotonic)
        self._reports: dict[Key, tuple[str, str]] = {}
        self._unsent: dict[Key, tuple[str, str] | None] = {}  # reports not yet written (None: forget)
        self._registered = False
        self._migrated = False
        self._outage = False
        self._wake = asyncio.Event()
        self.ready_file = config.model_dir / READY_FILE
        self._settled: bool | None = None  # what the ready file says; None: not written yet

    # --- the loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Converge now, then whenever the registry changes or ``poll_seconds`` passed."""
        loop = asyncio.get_running_loop()

        def wake(_revision: int) -> None:  # from the watcher's thread
            loop.call_soon_threadsafe(self._wake.set)

        watcher = Watcher(
            self.registry,
            wake,
            poll_interval=self.config.poll_seconds,
            max_backoff=max(5.0, self.config.poll_seconds),
        )
        watching = False
        self._mark_settled(False)  # a file left by an earlier run (an emptyDir outlives a container)
        beats = asyncio.create_task(self._heartbeats(stop))
        try:
            while not stop.is_set():
                if self._migrated and not watching:  # once the schema is there to watch
                    watcher.start()
                    watching = True
                self._wake.clear()
                try:
                    await self.converge()
                except Exception:  # a bug or a surprise: keep the replica as it is, try again
                    log.exception("converging failed; trying again in %g s", self.config.poll_seconds)
                waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
                await asyncio.wait(waits, timeout=self.config.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
        finally:
            beats.cancel()
            await asyncio.to_thread(watcher.stop)
            await self._deregister()

    async def _deregister(self) -> None:
        """Take the replica out of the registry as the agent stops, so gateways stop routing to it
        at their next read instead of after the heartbeat TTL (a pod being drained, a scale-down).
        Left to the TTL while the registry cannot be reached."""
        if not self._registered:
            return
        try:
            await asyncio.to_thread(self.registry.deregister_replica, self.config.replica_id)
            self._registered = False
            log.info("deregistered replica %s", self.config.replica_id)
        except RegistryUnavailable as exc:
            log.warning("could not deregister replica %s: %s", self.config.replica_id, exc)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        """Every ``heartbeat_seconds`` (the first pass of ``converge`` registers the replica)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.heartbeat_seconds)
                return
            except TimeoutError:
                pass
            try:
                if self._registered and not await asyncio.to_thread(self.registry.heartbeat, self.config.replica_id):
                    self._registered = False  # removed meanwhile: register again, and report again
                    self._unsent.update(self._reports)
                if not self._registered:
                    await self._register()
                self._registry_back()
            except RegistryUnavailable as exc:
                self._registry_down(exc)
            except Exception:  # never let the heartbeat stop for good
                log.exception("heartbeat failed; trying again in %g s", self.config.heartbeat_seconds)

    async def converge(self) -> None:
        """One pass: read the desired versions, unload what is not wanted, load what is missing."""
        await self._flush()
        try:
            self._desired, self._serving = await asyncio.to_thread(self.registry.holdings, self.config.stack)
            self._registry_back()
        except RegistryUnavailable as exc:
            self._registry_down(exc)
        if self._desired is None:
            return  # nothing known yet (the registry down since the start): change nothing
        wanted = {(model, v) for model, versions in self._desired.items() for v in versions}
        for key in sorted((self._held | self._local() | set(self._reports)) - wanted):
            await self._remove(key)
        settled = True
        for key in sorted(wanted):
            if not await self._ensure(key):
                settled = False
                break  # the backend cannot be asked now: the next pass tries again
        await self._flush()  # the reports first: the gateways route on them
        serving = {(model, v) for model, versions in self._serving.items() for v in versions}
        settled = settled and serving <= self._held and all(k in self._held or k in self._failed for k in wanted)
        self._mark_settled(settled)

    def _mark_settled(self, settled: bool) -> None:
        """Create or remove ``READY_FILE`` when the replica's state changes."""
        if settled == self._settled:
            return
        try:
            if settled:
                self.ready_file.parent.mkdir(parents=True, exist_ok=True)
                self.ready_file.touch()
            else:
                self.ready_file.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("readiness file %s: %s", self.ready_file, exc)
            return
        self._settled = settled
        log.info("replica %s %s", self.config.replica_id, "holds its versions" if settled else "is not settled")

    # --- one version -------------------------------------------------------------------------
    async def _ensure(self, key: Key) -> bool:
        """Make ``key`` ready on the backend unless it is, or failed recently; False when the
        backend cannot be reached."""
        model, version = key
        status = await self.backend.status(model, version)
        if status.state == "UNKNOWN":
            return False
        if status.available:
            self._held.add(key)
            self._failed.pop(key, None)
            self._report(key, "ready")
            return True
        if key in self._failed and time.monotonic() < self._failed[key]:
            return True
        if status.state in ("START", "LOADING") and key in self._held:
            self._report(key, "loading")  # e.g. workers recovering: the backend is on it
            return True
        if key in self._held:  # it served this version and lost it (a backend restarted empty)
            self._held.discard(key)
            self._mark_settled(False)
        self._report(key, "loading")
        await self._flush()
        try:
            await self._pull(key)
            await self.backend.load(model, version, self._keep(include=key))
            await self._wait_ready(key)
        except GatewayError as exc:
            if exc.status_code == 503:  # the backend went away meanwhile: not the version's fault
                log.warning("%s v%d: %s; trying again", model, version, exc.message)
                return False
            await self._fail(key, exc.message)
        except ArtifactMissing as exc:  # not stored yet (the gateway stores adopted versions in
            # the background): tried again at the next pass instead of after the failure delay
            await self._fail(key, str(exc), retry=self.config.poll_seconds)
        except (ArtifactError, LoadFailed) as exc:
            await self._fail(key, str(exc))
        except OSError as exc:  # replica-local storage: full, read-only, something in the way
            await self._fail(key, f"replica-local storage: {exc}")
        else:
            self._held.add(key)
            self._failed.pop(key, None)
            self._report(key, "ready")
            log.info("%s v%d is ready", model, version)
        return True

    async def _fail(self, key: Key, error: str, retry: float | None = None) -> None:
        """Report ``key`` failed, and unload it so that nothing else on the backend changes; it is
        tried again after ``retry`` seconds (default: ``retry_failed_seconds``)."""
        model, version = key
        log.warning("%s v%d failed: %s", model, version, error)
        delay = self.config.retry_failed_seconds if retry is None else retry
        self._failed[key] = time.monotonic() + delay
        self._report(key, "failed", error)
        try:
            await self.backend.unload(model, version, self._keep(exclude=key))
        except GatewayError as exc:
            log.warning("could not unload %s v%d after its failure: %s", model, version, exc.message)

    async def _remove(self, key: Key) -> None:
        """Unload a version no longer wanted, delete its local files, and drop its report."""
        model, version = key
        try:
            await self.backend.unload(model, version, self._keep(exclude=key))
        except GatewayError as exc:
            log.warning("could not unload %s v%d: %s; trying again", model, version, exc.message)
            return
        self._held.discard(key)
        self._failed.pop(key, None)
        await asyncio.to_thread(shutil.rmtree, self._path(key), True)
        self._report(key, None)
        log.info("%s v%d unloaded", model, version)

    async def _pull(self, key: Key) -> None:
        path = self._path(key)
        if not path.is_dir():  # a fetch is all or nothing: a directory here is complete
            await self.artifacts.fetch(key[0], key[1], path)

    async def _wait_ready(self, key: Key) -> None:
        """Until the backend reports the version AVAILABLE (TF Serving finds a new version of a
        configured model only at its next file-system poll), or fail with its error."""
        model, version = key
        start = time.monotonic()
        deadline = start + self.config.ready_timeout_seconds
        grace = start + self.config.discovery_grace_seconds
        while True:
            status = await self.backend.status(model, version)
            if status.available:
                return
            now = time.monotonic()
            if status.state == "END" and status.error:
                raise LoadFailed(f"{self.config.stack} could not load {model} v{version}: {status.error}")
            if status.gone and now >= grace:
                raise LoadFailed(f"{self.config.stack} did not find {model} v{version} after loading it")
            if now >= deadline:
                detail = f": {status.error}" if status.error else ""
                raise LoadFailed(
                    f"{self.config.stack} did not report {model} v{version} ready within "
                    f"{self.config.ready_timeout_seconds:g}s ({status.state}{detail})"
                )
            await asyncio.sleep(0.25)

    # --- bookkeeping -------------------------------------------------------------------------
    def _path(self, key: Key) -> Path:
        return self.config.model_dir / key[0] / str(key[1])

    def _local(self) -> set[Key]:
        """The versions in replica-local storage."""
        found: set[Key] = set()
        root = self.config.model_dir
        for model_dir in root.iterdir() if root.is_dir() else ():
            if model_dir.is_dir() and is_model_name(model_dir.name):
                for child in model_dir.iterdir():
                    number = version_number(child.name)
                    if number is not None and child.is_dir():
                        found.add((model_dir.name, number))
        return found

    def _keep(self, *, include: Key | None = None, exclude: Key | None = None) -> dict[str, set[int]]:
        """What must stay loaded (TF Serving's reload replaces the whole list): the ready ones."""
        keep: dict[str, set[int]] = {}
        for model, version in self._held | ({include} if include else set()):
            if (model, version) != exclude:
                keep.setdefault(model, set()).add(version)
        return keep

    def _report(self, key: Key, state: str | None, error: str = "") -> None:
        value = None if state is None else (state, error)
        if value == self._reports.get(key):
            return
        if value is None:
            self._reports.pop(key, None)
        else:
            self._reports[key] = value
        self._unsent[key] = value

    async def _register(self) -> None:
        c = self.config
        if not self._migrated:  # here, not at start: an agent must start while the registry is down
            await asyncio.to_thread(self.registry.migrate)
            self._migrated = True
        await asyncio.to_thread(self.registry.register_replica, c.replica_id, c.stack, c.address, c.host)
        self._registered = True
        log.info("registered replica %s (%s at %s on %s)", c.replica_id, c.stack, c.address, c.host)

    async def _flush(self) -> None:
        """Write the reports not yet written; on an outage they wait for the next pass."""
        try:
            if not self._registered:
                await self._register()
            for key, value in list(self._unsent.items()):
                if value is None:
                    await asyncio.to_thread(self.registry.forget_version, self.config.replica_id, *key)
                else:
                    await asyncio.to_thread(self.registry.report_version, self.config.replica_id, *key, *value)
                if self._unsent.get(key, ...) == value:
                    del self._unsent[key]
        except RegistryUnavailable as exc:
            self._registry_down(exc)

    def _registry_down(self, exc: RegistryUnavailable) -> None:
        if not self._outage:
            log.warning("%s; serving what this replica holds, reports wait", exc)
            self._outage = True

    def _registry_back(self) -> None:
        if self._outage:
            log.warning("the registry is reachable again")
            self._outage = False
