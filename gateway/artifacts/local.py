"""The artifact store in a local directory: the single-machine default.

Files live where the model store keeps them, ``<root>/<model>/<version>/``, so with the default
root (the model store itself) storing a deployed version copies nothing: it only writes the
version's manifest, ``<root>/.artifacts/<model>/<version>.json`` (a hidden name, which no scan of
the store reads). With another root, ``put`` copies the version there first, atomically.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.artifacts.base import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactMissing,
    Manifest,
    check_same,
    checked,
    entry_of,
    file_sha256,
    manifest_of,
)


class LocalArtifactStore:
    """Versions in ``root/<model>/<version>/``, manifests in ``root/.artifacts/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"local directory {root}"

    def _dir(self, model: str, version: int) -> Path:
        return self.root / model / str(version)

    def _manifest_path(self, model: str, version: int) -> Path:
        return self.root / ".artifacts" / model / f"{version}.json"

    async def put(self, model: str, version: int, directory: Path) -> tuple[Manifest, bool]:
        return await asyncio.to_thread(self._put, model, version, directory)

    async def manifest(self, model: str, version: int) -> Manifest | None:
        return await asyncio.to_thread(self._read_manifest, model, version)

    async def fetch(self, model: str, version: int, into: Path) -> Manifest:
        return await asyncio.to_thread(self._fetch, model, version, into)

    async def discard(self, manifest: Manifest, directory: Path) -> None:
        await asyncio.to_thread(self._discard, manifest, directory)

    async def read(self, model: str, version: int, path: str) -> bytes | None:
        return await asyncio.to_thread(self._read, model, version, path)

    def _read(self, model: str, version: int, path: str) -> bytes | None:
        where = f"{model} v{version} in {self.description}"
        manifest = self._read_manifest(model, version)
        entry = entry_of(manifest, path) if manifest is not None else None
        if entry is None:
            return None
        try:
            return checked((self._dir(model, version) / entry.path).read_bytes(), entry, where)
        except OSError as exc:
            raise ArtifactError(f"{where}: cannot read {entry.path}: {exc}") from exc

    def _discard(self, manifest: Manifest, directory: Path) -> None:
        self._manifest_path(manifest.model, manifest.version).unlink(missing_ok=True)
        final = self._dir(manifest.model, manifest.version)
        if final.resolve() != directory.resolve():  # a copy of its own (a store outside the model store)
            shutil.rmtree(final, ignore_errors=True)

    def _read_manifest(self, model: str, version: int) -> Manifest | None:
        path = self._manifest_path(model, version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"{self.description}: cannot read {path}: {exc}") from exc
        return Manifest.from_json(data, f"{model} v{version} in {self.description}")

    def _put(self, model: str, version: int, directory: Path) -> tuple[Manifest, bool]:
        where = f"{model} v{version} in {self.description}"
        new = manifest_of(model, version, directory)
        stored = self._read_manifest(model, version)
        if stored is not None:
            check_same(stored, new, where)
            return stored, False
        final = self._dir(model, version)
        try:
            if final.resolve() != directory.resolve() and not self._copy(directory, final):
                # Already there: placed by a concurrent put, or by an older store without manifests.
                check_same(manifest_of(model, version, final), new, where)
            _create(self._manifest_path(model, version), new.to_json())
        except FileExistsError:  # another writer recorded it first
            stored = self._read_manifest(model, version)
            assert stored is not None
            check_same(stored, new, where)
            return stored, False
        except OSError as exc:
            raise ArtifactError(f"{where}: cannot store it: {exc}") from exc
        return new, True

    @staticmethod
    def _copy(directory: Path, final: Path) -> bool:
        """Copy ``directory`` to ``final`` atomically; False if ``final`` exists (nothing copied)."""
        if final.exists():
            return False
        try:
            with staging(final) as tmp:
                shutil.copytree(directory, tmp, symlinks=True)
        except OSError:
            if final.exists():  # another writer renamed its copy into place first
                return False
            raise
        return True

    def _fetch(self, model: str, version: int, into: Path) -> Manifest:
        where = f"{model} v{version} in {self.description}"
        manifest = self._read_manifest(model, version)
        source = self._dir(model, version)
        if manifest is None:
            if not source.is_dir():
                raise ArtifactMissing(f"{where}: not stored")
            # A version placed before manifests were kept (adopted from the model store): its files
            # are what the gateway serves, so they are taken as they are, and checked while copied.
            manifest = manifest_of(model, version, source)
        try:
            with staging(into) as tmp:
                for entry in manifest.files:
                    target = tmp / entry.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source / entry.path, target)
                    if file_sha256(target) != (entry.size, entry.sha256):
                        raise ArtifactCorrupt(f"{where}: {entry.path} does not match its manifest")
        except FileNotFoundError as exc:
            raise ArtifactCorrupt(f"{where}: a file of the manifest is missing: {exc.filename}") from exc
        except OSError as exc:
            raise ArtifactError(f"{where}: cannot fetch it: {exc}") from exc
        return manifest


@contextmanager
def staging(final: Path) -> Iterator[Path]:
    """(Shared with the S3 store.) A hidden directory beside ``final``, renamed to ``final`` when the block succeeds and
    removed when it fails; a reader never sees a half-written version."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _create(path: Path, data: bytes) -> None:
    """Write ``path`` only if it does not exist (``FileExistsError`` otherwise), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # fails if path exists: the first writer wins
    finally:
        tmp.unlink()
