"""Version states as GetModelStatus reports them, and the version-label rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from .errors import ServingError

State = get_model_status_pb2.ModelVersionStatus.State
START, LOADING, AVAILABLE = State.Value("START"), State.Value("LOADING"), State.Value("AVAILABLE")
UNLOADING, END = State.Value("UNLOADING"), State.Value("END")


@dataclass
class VersionRecord:
    """One version as the state monitor reports it, plus the manager's harness fields.

    `state` is what GetModelStatus shows. `managed` says whether the manager still holds
    the version (BasicManager's managed map); the monitor keeps a record after the manager
    lets go of it, as ServableStateMonitor does. `seq` numbers the last state event, so a
    reload can wait for events that happened after it started (a "fresh monitor").
    """

    state: int
    path: str
    aspired: bool = True
    managed: bool = True
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    servable: Any = None
    seq: int = 0


@dataclass(frozen=True)
class VersionStatus:
    """An immutable snapshot of one version's status."""

    version: int
    state: int
    error_code: grpc.StatusCode
    error_message: str


def check_labels(
    models: Iterable[model_server_config_pb2.ModelConfig],
    versions: Mapping[str, Mapping[int, VersionRecord]],
    current_labels: Mapping[str, Mapping[str, int]],
    allow_unavailable: bool,
) -> dict[str, dict[str, int]]:
    """Return the new label map, or raise as ServerCore::UpdateModelVersionLabelMap does.

    A label must point at an AVAILABLE version. --allow_version_labels_for_unavailable_models
    relaxes that for new labels (and unchanged ones), but never for moving an existing label.
    """
    result: dict[str, dict[str, int]] = {}
    for model in models:
        records = versions.get(model.name, {})
        for label, version in model.version_labels.items():
            existing = current_labels.get(model.name, {}).get(label)
            allowed = allow_unavailable and existing in (None, version)
            record = records.get(version)
            if not allowed and (record is None or record.state != AVAILABLE):
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {model.name}, "
                    "which is not currently available for inference",
                )
            result.setdefault(model.name, {})[label] = version
    return result
