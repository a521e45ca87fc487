"""The aspired-versions manager: turns aspired versions into loads, unloads and states.

Follows core/aspired_versions_manager.cc, core/basic_manager.cc, core/loader_harness.cc and
util/retrier.cc with the server's defaults (--num_load_threads=0):
- The source's aspired-versions calls are only queued. A manage-state thread runs every
  100 ms: it forgets finished versions that are no longer aspired (FlushServables),
  processes the queued calls (a version becomes START), then takes ONE action chosen by
  the AvailabilityPreservingPolicy (unloads first, else load the highest new version).
- A load runs on that same thread and is retried --max_num_load_retries times, waiting
  --load_retry_interval_micros between attempts; meanwhile the state stays LOADING with an
  OK status, and no other version is loaded or unloaded. After the last failed attempt the
  version is END with the last error; it is loaded again only after it stopped being
  aspired and comes back.
- States are kept as the ServableStateMonitor keeps them: every version ever seen, END
  included; a version never seen is unknown (GetModelStatus: NOT_FOUND).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from .errors import ServingError, from_exception
from .states import AVAILABLE, END, LOADING, START, UNLOADING, VersionRecord, VersionStatus

log = logging.getLogger("tfserving_dev.manager")

# (name, version, path) -> a loaded servable; injected so the manager is testable without TF.
Loader = Callable[[str, int, str], Any]

# AspiredVersionsManager::Options::manage_state_interval_micros (not a server flag).
MANAGE_STATE_INTERVAL_SECONDS = 0.1


def servable_id(name: str, version: int) -> str:
    """ServableId::DebugString()."""
    return f"{{name: {name} version: {version}}}"


class AspiredVersionsManager:
    """Thread-safe version states driven by aspired-versions calls and a periodic tick."""

    def __init__(
        self,
        loader: Loader,
        max_num_load_retries: int = 5,
        load_retry_interval_micros: int = 60_000_000,
        manage_state_interval_seconds: float = MANAGE_STATE_INTERVAL_SECONDS,
    ) -> None:
        self._loader = loader
        self._max_retries = max_num_load_retries
        self._retry_interval = max(load_retry_interval_micros, 0) / 1e6
        self._interval = manage_state_interval_seconds
        self._cond = threading.Condition()
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self._pending: dict[str, dict[int, str]] = {}
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the manage-state thread (a daemon: a load in progress never delays exit)."""
        self._thread = threading.Thread(target=self._run, name="tfs-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wake every waiter; a running load is abandoned."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug must not stop all future loads silently
                log.exception("Manage-state iteration failed")
            self._stop.wait(self._interval)

    # -- the source's side ------------------------------------------------------------------

    def set_aspired_versions(self, name: str, versions: dict[int, str]) -> None:
        """EnqueueAspiredVersionsRequest: the latest call per model wins; applied on a tick."""
        with self._cond:
            self._pending[name] = dict(versions)

    # -- one manage-state iteration -----------------------------------------------------------

    def tick(self) -> None:
        """FlushServables, HandlePendingAspiredVersionsRequests, InvokePolicyAndExecuteAction."""
        with self._cond:
            self._flush()
            self._handle_pending()
            action = self._next_action()
            if action is None:
                return
            unload, name, version = action
            record = self._versions[name][version]
            if unload:
                self._publish(record, UNLOADING)
                record.servable = None  # in-flight requests keep their own reference
                self._publish(record, END)
                log.info("Unloaded servable version %s", servable_id(name, version))
                return
            self._publish(record, LOADING)
            path = record.path
        servable, error = self._load_with_retries(name, version, path)
        with self._cond:
            if self._stop.is_set():
                return
            if error is not None:
                record.error_code, record.error_message = error.code, error.message
                self._publish(record, END)
            else:
                record.servable = servable
                self._publish(record, AVAILABLE)
                log.info("Successfully loaded servable version %s", servable_id(name, version))

    def _publish(self, record: VersionRecord, state: int) -> None:
        self._seq += 1
        record.state, record.seq = state, self._seq
        self._cond.notify_all()

    def _flush(self) -> None:
        for records in self._versions.values():
            for record in records.values():
                if record.managed and not record.aspired and record.state in (START, END):
                    record.managed = False
                    self._cond.notify_all()

    def _handle_pending(self) -> None:
        for name in sorted(self._pending):
            versions = self._pending[name]
            records = self._versions.setdefault(name, {})
            if any(v in records and records[v].managed and not records[v].aspired for v in versions):
                continue  # a re-aspired version must finish unloading first
            del self._pending[name]
            current = set()
            for version, record in records.items():
                if not record.managed:
                    continue
                if version in versions:
                    current.add(version)
                else:
                    record.aspired = False
            for version in sorted(set(versions) - current):
                records[version] = VersionRecord(state=START, path=versions[version])
                self._publish(records[version], START)

    def _next_action(self) -> tuple[bool, str, int] | None:
        loads: list[tuple[bool, str, int]] = []
        for name in sorted(self._versions):
            managed = {v: r for v, r in self._versions[name].items() if r.managed}
            aspired = [r for r in managed.values() if r.aspired]
            serving = any(r.state == AVAILABLE for r in aspired)
            unaspired_ready = sorted(v for v, r in managed.items() if not r.aspired and r.state == AVAILABLE)
            if unaspired_ready and (not aspired or serving or len(unaspired_ready) > 1):
                return True, name, unaspired_ready[0]  # unloads go first
            new = [v for v, r in managed.items() if r.aspired and r.state == START]
            if new:
                loads.append((False, name, max(new)))
        return loads[0] if loads else None

    def _load_with_retries(self, name: str, version: int, path: str) -> tuple[Any, ServingError | None]:
        """LoaderHarness::Load through Retry(): up to 1 + max_num_load_retries attempts."""
        description = f"Loading servable: {servable_id(name, version)}"
        log.info("Loading servable version %s from %s", servable_id(name, version), path)
        attempt = 0
        while True:
            if attempt > 0:
                if self._stop.wait(self._retry_interval):
                    return None, ServingError(grpc.StatusCode.CANCELLED, "Loading of servable cancelled")
                log.info("Retrying of %s retry: %d", description, attempt)
            try:
                return self._loader(name, version, path), None
            except Exception as exc:  # any load failure is reported, never fatal
                error = from_exception(exc)
            log.error("%s failed: %s", description, error)
            attempt += 1
            if attempt > self._max_retries:
                log.info("Retrying of %s exhausted max_num_retries: %d", description, self._max_retries)
                return None, error

    # -- queries ----------------------------------------------------------------------------

    def event_seq(self) -> int:
        """The number of the latest state event (a start mark for wait_until_reached)."""
        with self._cond:
            return self._seq

    def records(self) -> dict[str, dict[int, VersionRecord]]:
        """The live state map; callers must hold the lock (`with manager.lock:`)."""
        return self._versions

    @property
    def lock(self) -> threading.Condition:
        """The lock guarding the state map."""
        return self._cond

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: one version, or all versions newest first."""
        with self._cond:
            records = self._versions.get(name, {})
            if version is not None:
                if version not in records:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Could not find version {version} of model {name}",
                    )
                selected = {version: records[version]}
            elif not records:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            else:
                selected = records
            return [
                VersionStatus(v, r.state, r.error_code, r.error_message)
                for v, r in sorted(selected.items(), reverse=True)
            ]

    def servable(self, name: str, version: int | None, request: str) -> tuple[Any, int]:
        """The AVAILABLE servable of one version, or of the highest available one."""
        with self._cond:
            records = self._versions.get(name, {})
            if version is None:
                version = max((v for v, r in records.items() if r.state == AVAILABLE), default=-1)
            record = records.get(version)
            if record is None or record.state != AVAILABLE or record.servable is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
            return record.servable, version

    def wait_until_reached(self, names: Iterable[str], since: int, noun: str) -> None:
        """Block until each model has a version AVAILABLE or END by an event after `since`.

        ServableStateMonitor::WaitUntilServablesReachState for ServableRequest::Latest, with
        no timeout (ServerCore's servable_state_waiter_timeout is infinite). Raises UNKNOWN
        "N <noun> did not become available: {...}" when the version found is END.
        """
        names = sorted(set(names))
        with self._cond:
            self._cond.wait_for(lambda: self._stop.is_set() or all(self._reached(n, since) for n in names))
            if self._stop.is_set():
                raise ServingError(grpc.StatusCode.CANCELLED, "Server is shutting down")
            failed = []
            for name in names:
                version = self._reached(name, since)
                assert version is not None
                record = self._versions[name][version]
                if record.state != AVAILABLE:
                    reason = ""
                    if record.error_code != grpc.StatusCode.OK:
                        reason = f" due to error: {record.error_code.name}: {record.error_message}"
                    failed.append(f"{{{servable_id(name, version)}{reason}}}, ")
        if failed:
            raise ServingError(
                grpc.StatusCode.UNKNOWN, f"{len(failed)} {noun} did not become available: {{{''.join(failed)}}}"
            )

    def _reached(self, name: str, since: int) -> int | None:
        for version, record in sorted(self._versions.get(name, {}).items()):
            if record.seq > since and record.state in (AVAILABLE, END):
                return version
        return None
