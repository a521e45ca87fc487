"""What the model store holds, and the desired-state file.

A version directory's artifact tells its backend (each adapter recognises its own, see
``gateway.backends.catalog``): a ``*.mar`` archive is served by TorchServe, a ``saved_model.pb`` by
TF Serving. Its ``signature.json``, when present, describes its tensors;
TF Serving versions without one are described by TF Serving's own metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.backends.catalog import ARTIFACTS, backend_of
from gateway.core.kinds import Kind
from gateway.core.names import is_model_name
from gateway.core.types import version_number

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version found in the model store."""

    model: str
    version: int
    backend: Kind
    path: Path


def _mismatch(version_dir: Path, kind: Kind) -> str | None:
    """Why the backend would serve this directory's artifact under another version than its name.

    An unreadable artifact is not judged here: registering it fails loudly at the backend.
    """
    artifacts = ARTIFACTS[kind]
    try:
        stated = artifacts.stated_version(version_dir)
    except ValueError:
        return None
    if stated is not None and stated != version_dir.name:
        return (
            f"its archive's manifest states version {stated!r}, and {artifacts.server} keys versions by that "
            f"exact string (rebuild it with {artifacts.rebuild_hint(int(version_dir.name))})"
        )
    return None


def scan_store(store: Path) -> list[StoredVersion]:
    """Every complete ``<model>/<version>/`` in the store, sorted; temp and odd entries skipped."""
    found: list[StoredVersion] = []
    if not store.is_dir():
        log.warning("model store %s does not exist", store)
        return found
    for model_dir in sorted(store.iterdir()):
        if not model_dir.is_dir() or not is_model_name(model_dir.name):
            continue
        for version_dir in sorted(model_dir.iterdir()):
            version = version_number(version_dir.name)
            if not version_dir.is_dir() or version is None:
                if version_dir.is_dir() and version_dir.name.isdigit():
                    log.warning("skipping %s: versions are written without leading zeros", version_dir)
                continue
            kind = backend_of(version_dir)
            if kind is None:
                log.warning("skipping %s: no .mar or saved_model.pb", version_dir)
                continue
            if why := _mismatch(version_dir, kind):
                log.warning("skipping %s: %s", version_dir, why)
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
