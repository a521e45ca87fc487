"""What the model store holds, and the desired-state file.

A version directory's artifact tells its backend: a ``*.mar`` archive is served by TorchServe, a
``saved_model.pb`` by TF Serving. Its ``signature.json``, when present, describes its tensors;
TF Serving versions without one are described by TF Serving's own metadata.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.backends.base import version_number
from gateway.names import is_model_name

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


def manifest_version(directory: Path) -> str | None:
    """The version the first ``.mar``'s manifest states, exactly as written ('' for none).

    None when the directory holds no ``.mar``; ``ValueError`` when the archive is unreadable.
    """
    archives = sorted(directory.glob("*.mar"))
    if not archives:
        return None
    try:
        with zipfile.ZipFile(archives[0]) as mar:
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ValueError(f"{archives[0].name} is not a valid model archive: {exc}") from None
    model = manifest.get("model") if isinstance(manifest, dict) else None
    version = model.get("modelVersion") if isinstance(model, dict) else None
    return version if isinstance(version, str) else ""


def _mismatch(version_dir: Path) -> str | None:
    """Why TorchServe would serve this directory's archive under another version than its name.

    An unreadable archive is not judged here: registering it fails loudly at the backend.
    """
    try:
        stated = manifest_version(version_dir)
    except ValueError:
        return None
    if stated is not None and stated != version_dir.name:
        return (
            f"its archive's manifest states version {stated!r}, and TorchServe keys versions by that exact "
            f"string (rebuild it with torch-model-archiver --version {version_dir.name})"
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
            if kind == "torchserve" and (why := _mismatch(version_dir)):
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
