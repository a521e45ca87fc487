"""Artifacts on their way into the model store: unpacked safely, recognised, placed atomically.

A deploy uploads a tar stream of one version directory: a TorchServe ``.mar`` or a SavedModel,
with ``signature.json``, ``sample_input.json`` and ``sample_output.json`` beside it.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import uuid
from pathlib import Path

from gateway.errors import DeployFailed
from gateway.routing.discovery import backend_of, manifest_version


def unpack(archive: Path, into: Path) -> Path:
    """Extract a tar (optionally compressed) into ``into``; return the version directory in it.

    Python's ``data`` filter refuses absolute paths, ``..``, links that leave the directory and
    device files, so an upload can never write outside its temp directory.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DeployFailed("unpack", f"the upload is not a readable tar archive: {exc}") from None
    entries = [p for p in into.iterdir() if not p.name.startswith(".")]
    if backend_of(into) is None and len(entries) == 1 and entries[0].is_dir():
        return entries[0]  # packed as one top-level directory
    return into


def mar_version(directory: Path) -> str | None:
    """The model version a ``.mar``'s manifest states, exactly as written ('' when it states none).

    Returned as text, never parsed loosely: TorchServe registers the archive under this exact
    string, so ``1.0`` must not pass for version 1. None when the directory holds no ``.mar``.
    """
    try:
        return manifest_version(directory)
    except ValueError as exc:
        raise DeployFailed("validate", str(exc)) from None


def digest(directory: Path) -> str:
    """A content hash of a directory tree (names and bytes), to tell a repeated deploy."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def scratch_dir(store: Path, model: str, purpose: str) -> Path:
    """A hidden temp directory inside the model's folder: same file system, so rename is atomic."""
    path = store / model / f".{purpose}-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


def remove_tree(path: Path) -> None:
    """Remove a directory: first renamed out of sight, so no reader sees it half deleted."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
