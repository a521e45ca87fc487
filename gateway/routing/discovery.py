"""What the model store holds, and the desired-state file.

A version directory's artifact tells its backend: a ``*.mar`` archive is served by TorchServe, a
``saved_model.pb`` by TF Serving. Its ``signature.json``, when present, describes its tensors;
TF Serving versions without one are described by TF Serving's own metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.routing.table import NAME_RE

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version found in the model store."""

    model: str
    version: int
    backend: str
    path: Path


def backend_of(path: Path) -> str | None:
    """``torchserve`` for a directory holding a .mar, ``tfserving`` for a SavedModel, else None."""
    if any(path.glob("*.mar")):
        return "torchserve"
    if (path / "saved_model.pb").is_file():
        return "tfserving"
    return None


def scan_store(store: Path) -> list[StoredVersion]:
    """Every complete ``<model>/<version>/`` in the store, sorted; temp and odd entries skipped."""
    found: list[StoredVersion] = []
    if not store.is_dir():
        log.warning("model store %s does not exist", store)
        return found
    for model_dir in sorted(store.iterdir()):
        if not model_dir.is_dir() or not NAME_RE.match(model_dir.name):
            continue
        for version_dir in sorted(model_dir.iterdir()):
            if not version_dir.is_dir() or not version_dir.name.isdigit():
                continue
            version = int(version_dir.name)
            kind = backend_of(version_dir)
            if version < 1 or kind is None:
                log.warning("skipping %s: no .mar or saved_model.pb", version_dir)
                continue
            found.append(StoredVersion(model_dir.name, version, kind, version_dir))
    return sorted(found, key=lambda v: (v.model, v.version))


def read_state(path: Path | None) -> dict[str, Any]:
    """The desired-state file's ``models`` mapping ({} without a file)."""
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    models = data.get("models", {}) if isinstance(data, dict) else {}
    if not isinstance(models, dict):
        raise ValueError(f"{path}: 'models' must be a mapping")
    return models
