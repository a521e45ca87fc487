"""Artifacts on their way into the model store: unpacked safely, recognised, placed atomically.

A deploy uploads a tar stream of one version directory: a TorchServe ``.mar`` or a SavedModel,
with ``signature.json``, ``sample_input.json`` and ``sample_output.json`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path

from gateway.errors import DeployFailed
from gateway.routing.discovery import backend_of


def unpack(archive: Path, into: Path) -> Path:
    """Extract a tar (optionally compressed) into ``into``; return the version directory in it.

    Python's ``data`` filter refuses absolute paths, ``..``, links that leave the directory and
    device files, so an upload can never write outside its temp directory. Pythons without it
    (3.11 before 3.11.4, e.g. Debian bookworm's 3.11.2) get :func:`plain_members`, stricter still.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:  # Python < 3.11.4 (the compose tests' gateway image runs Debian's 3.11.2)
                tar.extractall(into, members=plain_members(tar))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DeployFailed("unpack", f"the upload is not a readable tar archive: {exc}") from None
    entries = [p for p in into.iterdir() if not p.name.startswith(".")]
    if backend_of(into) is None and len(entries) == 1 and entries[0].is_dir():
        return entries[0]  # packed as one top-level directory
    return into


def plain_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The members of ``tar`` if all are plain files and directories with relative paths inside
    the archive, else :class:`tarfile.TarError` (no links, devices, absolute paths or ``..``)."""
    members = tar.getmembers()
    for member in members:
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
            raise tarfile.TarError(f"member {member.name!r} is not a plain file or directory inside the archive")
        member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    return members


def mar_version(directory: Path) -> int | None:
    """The model version written in a ``.mar``'s manifest, if it is an integer."""
    archives = sorted(directory.glob("*.mar"))
    if not archives:
        return None
    try:
        with zipfile.ZipFile(archives[0]) as mar:
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DeployFailed("validate", f"{archives[0].name} is not a valid model archive: {exc}") from None
    text = str(manifest.get("model", {}).get("modelVersion", ""))
    try:
        number = float(text)
    except ValueError:
        raise DeployFailed("validate", f"the archive's version {text!r} is not a number") from None
    if number < 1 or number != int(number):
        raise DeployFailed("validate", f"the archive's version {text!r} is not a positive integer")
    return int(number)


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
