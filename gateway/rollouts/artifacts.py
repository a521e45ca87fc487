"""Artifacts on their way into the model store: unpacked safely, recognised, placed atomically.

A deploy uploads a tar stream of one version directory: a TorchServe ``.mar`` or a SavedModel,
with ``signature.json``, ``sample_input.json`` and ``sample_output.json`` beside it.

The archive is unpacked into a private directory under the staging root
(``GATEWAY_STAGING_DIR``, default ``<store>/.staging``), never inside a model's folder, and only
a checked version directory is renamed into ``<store>/<model>/<version>``. The staging root must
share the store's file system so that this rename is atomic: a volume mounted at the store is one
file system, and a directory beside the volume (``<store>/../``) usually is not. Hidden names
are never models, so no scan of the store (the gateway's, the start-up helper's) reads it.

Safety does not rest on the interpreter's ``data`` filter, which had bypasses until CPython
3.11.13 / 3.12.11 / 3.13.4 (CVE-2025-4517, CVE-2025-4330, CVE-2025-4138, CVE-2024-12718). Each
member is checked here first: a relative name without ``..``, backslashes or control characters,
at most ``GATEWAY_ARTIFACT_MAX_PATH_LENGTH`` bytes; a regular file or a directory (no link of
either kind, device, FIFO or sparse file); at most ``GATEWAY_ARTIFACT_MAX_MEMBERS`` members and
``GATEWAY_ARTIFACT_MAX_UNPACKED_BYTES`` bytes, counted as they are written, so a small archive that
inflates (a tar bomb) stops at the limit. Files are created relative to directory descriptors
opened without following links, with ``O_EXCL``. The filter still runs where it exists.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gateway.backends.catalog import ARTIFACTS, backend_of
from gateway.core.errors import DeployFailed
from gateway.core.kinds import Kind
from gateway.settings import Settings

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME_MAX = 255
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


@dataclass(frozen=True)
class Limits:
    """What one archive may unpack to; the defaults are the settings' defaults."""

    unpacked_bytes: int = 4 * 1024**3
    members: int = 10_000
    path_length: int = 512

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits the operator configured."""
        return cls(
            settings.artifact_max_unpacked_bytes, settings.artifact_max_members, settings.artifact_max_path_length
        )


DEFAULT_LIMITS = Limits()


def unpack(archive: Path, into: Path, limits: Limits = DEFAULT_LIMITS) -> Path:
    """Extract a tar (optionally compressed) into the empty directory ``into``; return the
    version directory in it (``into`` itself, or the archive's one top-level directory).

    Refuses (``DeployFailed`` at step ``unpack``: 400 for a bad member, 413 past a limit) as soon
    as a member breaks a rule; what was written so far stays in ``into`` for the caller to remove.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            _extract(tar, into, limits)
    except (tarfile.TarError, EOFError) as exc:
        raise DeployFailed("unpack", f"the upload is not a readable tar archive: {exc}") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DeployFailed("unpack", "the model store's file system is full", 507) from None
        raise DeployFailed("unpack", f"the upload is not a readable tar archive: {exc.strerror or exc}") from None
    entries = [p for p in into.iterdir() if not p.name.startswith(".")]
    if backend_of(into) is None and len(entries) == 1 and entries[0].is_dir():
        return entries[0]  # packed as one top-level directory
    return into


def _refuse(name: str, why: str, status: int = 400) -> DeployFailed:
    shown = name if len(name) <= 80 else name[:77] + "..."
    return DeployFailed("unpack", f"archive member {shown!r} {why}", status)


def member_parts(name: str, limits: Limits) -> tuple[str, ...]:
    """The path components of a member name, or a refusal: relative, no ``..``, no backslash or
    control character, within the length limit. ``.`` components and empty ones are dropped."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > limits.path_length:
        raise _refuse(
            name, f"has a path of {len(raw)} bytes, over the limit of {limits.path_length} "
            "(GATEWAY_ARTIFACT_MAX_PATH_LENGTH)"
        )  # fmt: skip
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or "\\" in name:
        raise _refuse(name, "has a control character or a backslash in its name")
    if name.startswith("/"):
        raise _refuse(name, "has an absolute path; members must be relative to the version directory")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "has a '..' component; members must stay inside the version directory")
    if any(len(p.encode("utf-8", "surrogateescape")) > _NAME_MAX for p in parts):
        raise _refuse(name, f"has a component longer than {_NAME_MAX} bytes")
    return parts


def _check_kind(member: tarfile.TarInfo) -> None:
    if member.type in _KINDS or not (member.isreg() or member.isdir()):
        kind = _KINDS.get(member.type, f"of tar type {member.type!r}")
        raise _refuse(member.name, f"is {kind}; archives may hold only regular files and directories")


def _interpreter_filter(member: tarfile.TarInfo, into: Path) -> None:
    """Run the interpreter's ``data`` filter too, where it exists (3.11.4 and later)."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return
    try:
        data_filter(member, str(into))
    except tarfile.FilterError as exc:
        raise _refuse(member.name, f"is refused by the tar data filter ({type(exc).__name__})") from None


def _extract(tar: tarfile.TarFile, into: Path, limits: Limits) -> None:
    root = os.open(into, _DIR_FLAGS)
    try:
        count = total = 0
        for member in tar:  # headers are read one at a time: a limit stops the reading too
            count += 1
            if count > limits.members:
                raise DeployFailed(
                    "unpack",
                    f"the archive has more than {limits.members} members (GATEWAY_ARTIFACT_MAX_MEMBERS)",
                    413,
                )
            parts = member_parts(member.name, limits)
            _check_kind(member)
            _interpreter_filter(member, into)
            if not parts:
                continue  # "." itself: the version directory
            if member.isdir():
                os.close(_open_dirs(root, parts, member.name))
                continue
            if total + member.size > limits.unpacked_bytes:
                raise _too_big(limits)
            parent = _open_dirs(root, parts[:-1], member.name)
            try:
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has data
                with source:
                    total = _write(source, parent, parts[-1], member, total, limits)
            finally:
                os.close(parent)
    finally:
        os.close(root)


def _too_big(limits: Limits) -> DeployFailed:
    return DeployFailed(
        "unpack",
        f"the archive unpacks to more than {limits.unpacked_bytes} bytes (GATEWAY_ARTIFACT_MAX_UNPACKED_BYTES)",
        413,
    )


def _open_dirs(root: int, parts: tuple[str, ...], name: str) -> int:
    """A descriptor of ``root/parts...``, each directory created if missing, no link followed."""
    fd = os.dup(root)
    for part in parts:
        try:
            os.mkdir(part, 0o755, dir_fd=fd)
        except FileExistsError:
            pass
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise _refuse(name, f"needs '{part}' as a directory, but the archive made it a file") from None
            raise
        finally:
            os.close(fd)
        fd = child
    return fd


def _write(source: IO[bytes], parent: int, leaf: str, member: tarfile.TarInfo, total: int, limits: Limits) -> int:
    """Copy one member's bytes into a new file ``leaf`` under ``parent``; the new running total."""
    try:
        out = os.open(leaf, _FILE_FLAGS, 0o755 if member.mode & 0o100 else 0o644, dir_fd=parent)
    except FileExistsError:
        raise _refuse(member.name, "appears twice in the archive (or names an existing directory)") from None
    with os.fdopen(out, "wb") as sink:
        while chunk := source.read(_CHUNK):
            total += len(chunk)
            if total > limits.unpacked_bytes:
                raise _too_big(limits)
            sink.write(chunk)
    return total


def stated_version(directory: Path, kind: Kind) -> str | None:
    """The version ``kind``'s artifact in ``directory`` states, exactly as written ('' when blank).

    Returned as text, never parsed loosely: TorchServe registers an archive under its manifest's
    exact string, so ``1.0`` must not pass for version 1. None when the artifact states none (a
    SavedModel) or the directory holds none. An unreadable artifact fails the deploy's validation.
    """
    try:
        return ARTIFACTS[kind].stated_version(directory)
    except ValueError as exc:
        raise DeployFailed("validate", str(exc)) from None


def mar_version(directory: Path) -> str | None:
    """The version a ``.mar``'s manifest states (``stated_version`` for TorchServe)."""
    return stated_version(directory, "torchserve")


def digest(directory: Path) -> str:
    """A content hash of a directory tree (names and bytes), to tell a repeated deploy."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def staging_root(settings: Settings) -> Path:
    """The staging directory, created if missing; refused unless on the store's file system."""
    store, root = settings.model_store, settings.staging_path
    store.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    if root.stat().st_dev != store.stat().st_dev:
        raise DeployFailed(
            "unpack",
            "GATEWAY_STAGING_DIR is not on the model store's file system, so a version cannot be moved "
            "into the store atomically; an operator must point it at a directory on the store's volume",
            500,
        )
    return root


def stage(settings: Settings, model: str) -> Path:
    """A new private directory in the staging root for one deploy of ``model`` to unpack into."""
    path = Path(tempfile.mkdtemp(prefix=f"{model}-", dir=staging_root(settings)))
    path.chmod(0o755)  # it may become the version directory itself: the backends must read it
    return path


def remove_tree(path: Path) -> None:
    """Remove a directory: first renamed out of sight, so no reader sees it half deleted."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
