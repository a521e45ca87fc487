"""Servable manager: aspired versions, load/unload, states, labels and config reloads.

Mirrors TF Serving's ServerCore + AspiredVersionsManager for the parts the project uses:
version states START -> LOADING -> AVAILABLE -> UNLOADING -> END (or END with an error),
the availability-preserving unload policy, label validation on reload, and base-path
polling. Loads run on one background thread; requests only read a dict under a lock.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from .config import validate_model_config
from .errors import ServingError, from_exception, invalid_argument
from .states import (
    AVAILABLE,
    END,
    LOADING,
    START,
    UNLOADING,
    VersionRecord,
    VersionStatus,
    check_labels,
)
from .storage import VersionScanner, describe_policy

log = logging.getLogger("tfserving_dev.manager")

# (name, version, path) -> a loaded servable; injected so the manager is testable without TF.
Loader = Callable[[str, int, str], Any]


class ModelManager:
    """Thread-safe registry of model versions driven by a ModelServerConfig."""

    def __init__(
        self,
        loader: Loader,
        poll_wait_seconds: float = 1.0,
        allow_labels_for_unavailable: bool = False,
    ) -> None:
        self._loader = loader
        self._poll_wait = poll_wait_seconds
        self._allow_unavailable_labels = allow_labels_for_unavailable
        self._lock = threading.Condition()
        # Serializes reloads, like ServerCore's config_mu_ (held while a reload waits).
        self._reload_lock = threading.Lock()
        self._configs: dict[str, model_server_config_pb2.ModelConfig] = {}
        # Kept after a model leaves the config: TF Serving still reports its versions as END.
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._scanner = VersionScanner()
        self._generation = 0
        self._load_queue: queue.Queue[tuple[str, int, int] | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the loader thread and, if enabled, the base-path poller."""
        # Daemon threads: a load in progress must not delay shutdown.
        self._threads.append(threading.Thread(target=self._load_loop, name="tfs-loader", daemon=True))
        if self._poll_wait > 0:
            self._threads.append(threading.Thread(target=self._poll_loop, name="tfs-poller", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Ask the background threads to finish; does not wait for a running load."""
        self._stop.set()
        self._load_queue.put(None)

    # -- config ----------------------------------------------------------------------

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig, *, wait: bool = True) -> None:
        """Replace the model list, as HandleReloadConfigRequest does.

        Labels are checked against the current states first; a refused config changes
        nothing. With wait=True, returns once the models new to the config have a version
        AVAILABLE or have nothing left loading (TF Serving waits for new models only).
        """
        config = model_server_config_pb2.ModelServerConfig.FromString(config.SerializeToString())
        validate_model_config(config)
        models = list(config.model_config_list.config)
        with self._reload_lock, self._lock:
            labels = check_labels(models, self._versions, self._labels, self._allow_unavailable_labels)
            added = [m.name for m in models if m.name not in self._configs]
            removed = [name for name in self._configs if name not in {m.name for m in models}]
            self._configs = {m.name: m for m in models}
            self._labels = labels
            for name in removed:
                log.info("Removing model %s: unloading its versions", name)
                self._set_aspired(name, {})
            for model in models:
                log.info(
                    "Model %s: base_path %s, version policy %s",
                    model.name,
                    model.base_path,
                    describe_policy(model),
                )
                self._set_aspired(model.name, self._scanner.aspired_versions(model))
            if wait and added:
                self._lock.wait_for(lambda: self._settled(added) or self._stop.is_set())
                failures = self._failures(added)
                if failures:
                    raise ServingError(
                        grpc.StatusCode.UNKNOWN,
                        f"{len(failures)} model(s) did not become available: {{{', '.join(failures)}, }}",
                    )

    def _settled(self, names: list[str]) -> bool:
        for name in names:
            records = self._versions.get(name, {}).values()
            available = any(r.state == AVAILABLE for r in records)
            if not available and any(r.state in (START, LOADING) for r in records):
                return False
        return True

    def _failures(self, names: list[str]) -> list[str]:
        failures = []
        for name in names:
            records = self._versions.get(name, {})
            if any(r.state == AVAILABLE for r in records.values()):
                continue
            for version, r in sorted(records.items(), reverse=True):
                if r.aspired and r.error_code != grpc.StatusCode.OK:
                    failures.append(
                        f"{{name: {name} version: {version}}} due to error: {r.error_code.name}: {r.error_message}"
                    )
                    break
        return failures

    # -- aspired versions and the availability-preserving policy ----------------------

    def _set_aspired(self, name: str, aspired: dict[int, str]) -> None:
        """Record which versions are wanted and start/stop loads accordingly (lock held)."""
        records = self._versions.setdefault(name, {})
        for version in sorted(aspired, reverse=True):  # highest first, like TF Serving
            record = records.get(version)
            # A failed version is retried only after it stopped being aspired (as TF Serving).
            if record is None or (record.state == END and not record.aspired):
                self._generation += 1
                records[version] = VersionRecord(state=START, path=aspired[version], generation=self._generation)
                self._load_queue.put((name, version, self._generation))
            else:
                record.aspired = True
        for version, record in records.items():
            if version not in aspired:
                record.aspired = False
                if record.state == START:  # queued but not started: just drop it
                    record.state = END
        self._unload_unaspired(name)
        self._lock.notify_all()

    def _unload_unaspired(self, name: str) -> None:
        """AvailabilityPreservingPolicy: keep serving until an aspired version is ready."""
        records = self._versions.get(name, {})
        aspired = [r for r in records.values() if r.aspired]
        serving = any(r.state == AVAILABLE for r in aspired)
        ready = sorted(v for v, r in records.items() if not r.aspired and r.state == AVAILABLE)
        while ready and (not aspired or serving or len(ready) > 1):
            version = ready.pop(0)
            record = records[version]
            record.state = UNLOADING
            record.servable = None  # in-flight requests keep their own reference
            record.state = END
            log.info("Unloaded servable version {name: %s version: %d}", name, version)

    # -- background threads -------------------------------------------------------------

    def _load_loop(self) -> None:
        while not self._stop.is_set():
            item = self._load_queue.get()
            if item is None:
                return
            name, version, generation = item
            with self._lock:
                record = self._versions.get(name, {}).get(version)
                if record is None or record.generation != generation or record.state != START:
                    continue
                record.state = LOADING
                path = record.path
                self._lock.notify_all()
            log.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
            servable: Any = None
            error: ServingError | None = None
            try:
                servable = self._loader(name, version, path)
            except Exception as exc:  # any load failure is reported, never fatal
                error = from_exception(exc)
            self._finish_load(name, version, generation, servable, error)

    def _finish_load(
        self,
        name: str,
        version: int,
        generation: int,
        servable: Any,
        error: ServingError | None,
    ) -> None:
        with self._lock:
            record = self._versions.get(name, {}).get(version)
            if record is None or record.generation != generation:
                return
            if error is not None:
                record.state, record.error_code = END, error.code
                record.error_message = error.message
                log.error(
                    "Loading servable version {name: %s version: %d} failed: %s",
                    name,
                    version,
                    error,
                )
            elif record.aspired:
                record.state, record.servable = AVAILABLE, servable
                log.info("Servable version {name: %s version: %d} is AVAILABLE", name, version)
            else:
                record.state = END  # stopped being aspired while it loaded
            self._unload_unaspired(name)
            self._lock.notify_all()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_wait):
            self.poll_once()

    def poll_once(self) -> None:
        """Re-read every base path once, loading new versions and unloading removed ones."""
        with self._lock:
            for model in self._configs.values():
                self._set_aspired(model.name, self._scanner.aspired_versions(model))

    # -- queries --------------------------------------------------------------------------

    def resolve(self, spec: model_pb2.ModelSpec) -> tuple[Any, int]:
        """Find the servable for a ModelSpec; returns (servable, version)."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        with self._lock:
            records = self._versions.get(spec.name, {})
            choice = spec.WhichOneof("version_choice")
            if choice == "version_label":
                version = self._labels.get(spec.name, {}).get(spec.version_label)
                if version is None:
                    raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
                request = f"Specific({spec.name}, {version})"
            elif choice == "version":
                version = spec.version.value
                request = f"Specific({spec.name}, {version})"
            else:
                ready = [v for v, r in records.items() if r.state == AVAILABLE]
                version = max(ready, default=-1)
                request = f"Latest({spec.name})"
            record = records.get(version)
            if record is None or record.state != AVAILABLE or record.servable is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
            return record.servable, version

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus: one version, or all versions newest first."""
        with self._lock:
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
