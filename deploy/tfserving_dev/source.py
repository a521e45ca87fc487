"""The file-system source: polls base paths and tells the manager which versions to aspire.

Follows sources/storage_path/file_system_storage_path_source.cc:
- A config update (UpdateConfig) does NOT poll. It only un-aspires the models that left
  the config, at once. New models and new versions of configured models are found at the
  next periodic poll, so right after a reload their versions are unknown (NOT_FOUND).
- The poll thread starts with the first config and polls at once, then every
  --file_system_poll_wait_seconds. With 0 it polls once only; with a negative value never.
- A poll in which any base path is missing fails as a whole (logged, nothing emitted),
  so a vanished base path never unloads anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tensorflow_serving.config import model_server_config_pb2

from .errors import ServingError
from .storage import VersionScanner

log = logging.getLogger("tfserving_dev.source")

# (servable name, {version: path}) -> None: AspiredVersionsManager.set_aspired_versions.
AspiredVersionsCallback = Callable[[str, dict[int, str]], None]


class FileSystemSource:
    """Periodically lists each configured base path and emits the aspired versions."""

    def __init__(self, callback: AspiredVersionsCallback, poll_wait_seconds: float) -> None:
        self._callback = callback
        self._poll_wait = poll_wait_seconds
        self._mu = threading.Lock()
        self._models: list[model_server_config_pb2.ModelConfig] = []
        self._scanner = VersionScanner()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update_config(self, models: list[model_server_config_pb2.ModelConfig]) -> None:
        """Replace the monitored models; un-aspire removed ones now, find new ones later."""
        with self._mu:
            kept = {m.name for m in models}
            for old in self._models:
                if old.name not in kept:
                    self._callback(old.name, {})
            self._models = list(models)

    def model_names(self) -> set[str]:
        """Names of the monitored models (the source's own config)."""
        with self._mu:
            return {m.name for m in self._models}

    def start(self) -> None:
        """Start polling (SetAspiredVersionsCallback): once at once, then periodically."""
        if self._thread is not None or self._poll_wait < 0:
            return
        self._thread = threading.Thread(target=self._run, name="tfs-fs-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; does not wait for a poll in progress."""
        self._stop.set()

    def _run(self) -> None:
        self.poll_once()
        if self._poll_wait == 0:
            return
        while not self._stop.wait(self._poll_wait):
            self.poll_once()

    def poll_once(self) -> None:
        """PollFileSystemAndInvokeCallback: list every base path, then emit per model."""
        with self._mu:
            try:
                found = {m.name: self._scanner.aspired_versions(m) for m in self._models}
            except ServingError as exc:
                log.error("FileSystemStoragePathSource encountered a filesystem access error: %s", exc.message)
                return
            for name, versions in found.items():
                self._callback(name, versions)
