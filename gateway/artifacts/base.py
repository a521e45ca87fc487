"""The artifact store's interface, its manifest and its errors.

A version is stored once and never changes: ``put`` of a version the store already holds is a
no-op when the content is the same and an ``ArtifactConflict`` when it is not. What a version
holds is written down in its ``Manifest``: every file with its size and SHA-256, and one content
digest over all of them. ``fetch`` checks every byte it writes against the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

_CHUNK = 1 << 20


class ArtifactError(Exception):
    """The artifact store failed (unreachable, refused, or returned something unreadable)."""


class ArtifactConflict(ArtifactError):
    """The store already holds this version with other content: versions are immutable."""


class ArtifactMissing(ArtifactError):
    """The store does not hold this version."""


class ArtifactCorrupt(ArtifactError):
    """What the store returned does not match the version's manifest."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a version: its path inside the version directory, size and SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one stored version holds; ``digest`` is the SHA-256 over every file's entry."""

    model: str
    version: int
    digest: str
    files: tuple[FileEntry, ...]

    def to_json(self) -> bytes:
        """The manifest as the store keeps it."""
        body = {
            "model": self.model,
            "version": self.version,
            "digest": self.digest,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """Read a stored manifest; ``ArtifactCorrupt`` (naming ``where``) if it is not one."""
        try:
            body: Any = json.loads(data)
            files = tuple(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in body["files"])
            manifest = cls(str(body["model"]), int(body["version"]), str(body["digest"]), files)
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactCorrupt(f"{where}: unreadable manifest: {exc}") from None
        if manifest.digest != content_digest(files):
            raise ArtifactCorrupt(f"{where}: the manifest's digest does not match its file list")
        for entry in files:
            safe_relative(entry.path, where)
        return manifest


def content_digest(files: tuple[FileEntry, ...]) -> str:
    """The digest of a version: SHA-256 over its sorted file entries (path, size, SHA-256)."""
    h = hashlib.sha256()
    for entry in sorted(files, key=lambda f: f.path):
        h.update(f"{entry.path}\0{entry.size}\0{entry.sha256}\n".encode())
    return h.hexdigest()


def file_sha256(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of one file, read in chunks."""
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            h.update(chunk)
    return size, h.hexdigest()


def manifest_of(model: str, version: int, directory: Path) -> Manifest:
    """The manifest of the version directory ``directory`` (blocking: reads every file).

    Only regular files count; a link in a version directory is refused (the deploy's unpacking
    never makes one, and the store must not follow one out of the directory).
    """
    entries = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise ArtifactError(f"{path}: a link cannot be stored as an artifact file")
        if path.is_file():
            size, sha = file_sha256(path)
            entries.append(FileEntry(path.relative_to(directory).as_posix(), size, sha))
    files = tuple(entries)
    return Manifest(model, version, content_digest(files), files)


def safe_relative(path: str, where: str) -> str:
    """``path`` if it is a plain relative path without ``..``; ``ArtifactCorrupt`` otherwise."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise ArtifactCorrupt(f"{where}: the manifest names an unsafe path {path!r}")
    return path


def checked(data: bytes, entry: FileEntry, where: str) -> bytes:
    """``data`` if it is ``entry``'s content, else ``ArtifactCorrupt``."""
    if (len(data), hashlib.sha256(data).hexdigest()) != (entry.size, entry.sha256):
        raise ArtifactCorrupt(f"{where}: {entry.path} does not match its manifest")
    return data


def entry_of(manifest: Manifest, path: str) -> FileEntry | None:
    """The manifest's entry for ``path``, if it names one."""
    return next((entry for entry in manifest.files if entry.path == path), None)


def check_same(stored: Manifest, new: Manifest, where: str) -> None:
    """Refuse a second put of a version with other content (``ArtifactConflict``)."""
    if stored.digest != new.digest:
        raise ArtifactConflict(
            f"{where} is already stored with other content (digest {stored.digest[:12]}, this one "
            f"{new.digest[:12]}): stored versions are immutable, deploy it under a new version number"
        )


@runtime_checkable
class ArtifactStore(Protocol):
    """Where accepted versions are kept, once, for every replica to fetch."""

    #: Where the store is, for logs and messages (no secrets).
    description: str

    async def put(self, model: str, version: int, directory: Path) -> tuple[Manifest, bool]:
        """Store the version directory ``directory``; return its manifest and whether it was new.

        The same content again is a no-op; other content raises ``ArtifactConflict``.
        """
        ...

    async def manifest(self, model: str, version: int) -> Manifest | None:
        """The stored version's manifest, or None if the store does not hold it."""
        ...

    async def discard(self, manifest: Manifest, directory: Path) -> None:
        """Forget a version that ``put`` stored (returned as new) for a deploy that then failed:
        the manifest first, so no replica fetches it, then the files it names; the version number
        is free again for other content. ``directory`` is the one given to ``put``: a store that
        holds versions in place (the default local store) leaves it to the deploy."""
        ...

    async def read(self, model: str, version: int, path: str) -> bytes | None:
        """One small file of the stored version (``signature.json``), checked against the
        manifest; None if the store does not hold the version or the version has no such file."""
        ...

    async def fetch(self, model: str, version: int, into: Path) -> Manifest:
        """Write the stored version into the new directory ``into`` (which must not exist), all
        of it or nothing: files are checked against the manifest, then renamed into place.
        ``ArtifactMissing`` if the store does not hold it, ``ArtifactCorrupt`` on a mismatch."""
        ...
