"""ServerCore: config reloads, version labels and ModelSpec resolution.

Follows model_servers/server_core.cc:
- ReloadConfig holds the config lock (config_mu_) for its whole run, waits included, so
  reloads are serialized: a reload that waits makes every later one queue behind it.
- The first config connects the source and waits until every configured model has a
  version AVAILABLE, or END (a failed load, after its retries), with no timeout; a failure
  is "N servable(s) did not become available: ..." and tensorflow_model_server exits.
- A later config un-aspires removed models at once and waits only for models NEW to the
  config (with no timeout). New versions of configured models are not awaited: the source
  finds them at its next poll (see source.py), so GetModelStatus answers NOT_FOUND for
  them right after the reload returns.
- A config with no model list at all ("Taking no action for empty config") is accepted
  here; HandleReloadConfigRequest refuses it before it gets here (grpc_service.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from .config import validate_model_config
from .errors import invalid_argument
from .manager import MANAGE_STATE_INTERVAL_SECONDS, AspiredVersionsManager, Loader
from .source import FileSystemSource
from .states import VersionStatus, check_labels
from .storage import describe_policy

log = logging.getLogger("tfserving_dev.core")


class ServerCore:
    """The model server's core: source -> manager, config and labels."""

    def __init__(
        self,
        loader: Loader,
        file_system_poll_wait_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval_micros: int = 60_000_000,
        allow_version_labels_for_unavailable_models: bool = False,
        manage_state_interval_seconds: float = MANAGE_STATE_INTERVAL_SECONDS,
    ) -> None:
        self.manager = AspiredVersionsManager(
            loader, max_num_load_retries, load_retry_interval_micros, manage_state_interval_seconds
        )
        self.source = FileSystemSource(self.manager.set_aspired_versions, file_system_poll_wait_seconds)
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._config_mu = threading.Lock()
        self._config: model_server_config_pb2.ModelServerConfig | None = None
        self._labels: dict[str, dict[str, int]] = {}
        self._labels_mu = threading.Lock()

    def start(self) -> None:
        """Start the manager's manage-state thread (the source starts with the first config)."""
        self.manager.start()

    def stop(self) -> None:
        """Stop polling and loading; wakes any reload that waits."""
        self.source.stop()
        self.manager.stop()

    def reload_config(self, new_config: model_server_config_pb2.ModelServerConfig) -> None:
        """ServerCore::ReloadConfig; blocks as described in the module docstring."""
        new_config = model_server_config_pb2.ModelServerConfig.FromString(new_config.SerializeToString())
        with self._config_mu:
            if new_config.WhichOneof("config") is None:
                log.info("Taking no action for empty config.")
                return
            validate_model_config(new_config)
            models = list(new_config.model_config_list.config)
            self._check_platforms_unchanged(models)
            with self.manager.lock:
                labels = check_labels(
                    models, self.manager.records(), self._current_labels(), self._allow_unavailable_labels
                )
            with self._labels_mu:
                self._labels = labels
            first = self._config is None
            self._config = new_config
            log.info("Adding/updating models.")
            for model in models:
                log.info(" (Re-)adding model: %s (policy %s)", model.name, describe_policy(model))
            since = self.manager.event_seq()
            if first:
                self.source.update_config(models)
                self.source.start()
                self.manager.wait_until_reached([m.name for m in models], since, "servable(s)")
            else:
                new_models = {m.name for m in models} - self.source.model_names()
                self.source.update_config(models)
                self.manager.wait_until_reached(new_models, since, "model(s)")
            log.info("Finished adding/updating models")

    def _check_platforms_unchanged(self, models: list[model_server_config_pb2.ModelConfig]) -> None:
        old = {m.name: m.model_platform for m in (self._config.model_config_list.config if self._config else [])}
        for model in models:
            if model.name in old and old[model.name] != model.model_platform:
                raise invalid_argument(
                    f"Illegal to change a model's platform. For model {model.name} platform was "
                    f"{old[model.name]} and new platform requested is {model.model_platform}"
                )

    def _current_labels(self) -> dict[str, dict[str, int]]:
        with self._labels_mu:
            return self._labels

    def resolve(self, spec: model_pb2.ModelSpec) -> tuple[Any, int]:
        """ServableRequestFromModelSpec + GetServableHandle; returns (servable, version)."""
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            version = self._current_labels().get(spec.name, {}).get(spec.version_label)
            if version is None:
                raise invalid_argument(f"Unrecognized servable version label: {spec.version_label}")
            return self.manager.servable(spec.name, version, f"Specific({spec.name}, {version})")
        if choice == "version":
            version = spec.version.value
            return self.manager.servable(spec.name, version, f"Specific({spec.name}, {version})")
        return self.manager.servable(spec.name, None, f"Latest({spec.name})")

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """GetModelStatus from the state monitor."""
        return self.manager.status(name, version)
