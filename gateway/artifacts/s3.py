"""The artifact store in an S3-compatible bucket, through ``obstore`` (asynchronous, streaming).

Layout under the prefix: ``<model>/<version>/<digest>/<path>`` for the files and
``<model>/<version>/manifest.json`` for the manifest. The manifest is written last, with a
create-only precondition (``If-None-Match: *``), so it is what decides which content a version
has: two deploys of one version with different content upload to different digest folders and
only one manifest wins; the other put then finds the stored manifest and is refused. Files are
uploaded from disk in parts and downloaded as streams, never held whole in memory.

Credentials come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``; web identity and instance
metadata work too), read by obstore itself.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError
from obstore.store import S3Store

from gateway.artifacts.base import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactMissing,
    FileEntry,
    Manifest,
    check_same,
    checked,
    entry_of,
    manifest_of,
)
from gateway.artifacts.local import staging

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

_CHUNK = 8 << 20


def _reason(exc: BaseException) -> str:
    """obstore's message without its debug dump (the first line says what happened)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class S3ArtifactStore:
    """Versions in ``s3://<bucket>/<prefix>/``, at ``endpoint`` (None: AWS itself)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        timeout_seconds: float = 300.0,
    ) -> None:
        self.prefix = prefix.strip("/")
        where = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.description = f"{where} at {endpoint}" if endpoint else where
        client: ClientConfig = {"timeout": timedelta(seconds=timeout_seconds), "connect_timeout": timedelta(seconds=5)}
        if endpoint is not None and endpoint.startswith("http://"):
            client["allow_http"] = True
        # A store that is down fails a deploy or a pull within about half a minute, not three.
        retry: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}
        options: dict[str, str] = {}
        if endpoint is not None:
            options["endpoint"] = endpoint
        if region is not None:
            options["region"] = region
        self._store = S3Store(
            bucket,
            prefix=self.prefix or None,
            client_options=client,
            retry_config=retry,
            **options,  # type: ignore[arg-type]
        )

    def _key(self, model: str, version: int, name: str) -> str:
        return f"{model}/{version}/{name}"

    async def manifest(self, model: str, version: int) -> Manifest | None:
        where = f"{model} v{version} in {self.description}"
        try:
            result = await obstore.get_async(self._store, self._key(model, version, "manifest.json"))
            data = bytes(await result.bytes_async())
        except FileNotFoundError:
            return None
        except (BaseError, OSError) as exc:
            raise ArtifactError(f"{where}: cannot read the manifest: {_reason(exc)}") from exc
        return Manifest.from_json(data, where)

    async def put(self, model: str, version: int, directory: Path) -> tuple[Manifest, bool]:
        where = f"{model} v{version} in {self.description}"
        new = await asyncio.to_thread(manifest_of, model, version, directory)
        stored = await self.manifest(model, version)
        if stored is not None:
            check_same(stored, new, where)
            return stored, False
        try:
            for entry in new.files:
                key = self._key(model, version, f"{new.digest}/{entry.path}")
                await obstore.put_async(self._store, key, directory / entry.path, chunk_size=_CHUNK)
            await obstore.put_async(
                self._store, self._key(model, version, "manifest.json"), new.to_json(), mode="create"
            )
        except AlreadyExistsError:  # another writer's manifest won
            stored = await self.manifest(model, version)
            if stored is None:
                raise ArtifactError(f"{where}: the manifest exists but cannot be read") from None
            check_same(stored, new, where)
            return stored, False
        except (BaseError, OSError) as exc:
            raise ArtifactError(f"{where}: cannot store it: {_reason(exc)}") from exc
        return new, True

    async def discard(self, manifest: Manifest, directory: Path) -> None:
        model, version = manifest.model, manifest.version
        where = f"{model} v{version} in {self.description}"
        files = [self._key(model, version, f"{manifest.digest}/{entry.path}") for entry in manifest.files]
        try:
            await obstore.delete_async(self._store, self._key(model, version, "manifest.json"))
            await obstore.delete_async(self._store, files)
        except (BaseError, OSError) as exc:
            raise ArtifactError(f"{where}: cannot discard it: {_reason(exc)}") from exc

    async def read(self, model: str, version: int, path: str) -> bytes | None:
        where = f"{model} v{version} in {self.description}"
        manifest = await self.manifest(model, version)
        entry = entry_of(manifest, path) if manifest is not None else None
        if manifest is None or entry is None:
            return None
        try:
            result = await obstore.get_async(self._store, self._key(model, version, f"{manifest.digest}/{entry.path}"))
            data = bytes(await result.bytes_async())
        except (BaseError, OSError) as exc:
            raise ArtifactError(f"{where}: cannot read {entry.path}: {_reason(exc)}") from exc
        return checked(data, entry, where)

    async def fetch(self, model: str, version: int, into: Path) -> Manifest:
        where = f"{model} v{version} in {self.description}"
        manifest = await self.manifest(model, version)
        if manifest is None:
            raise ArtifactMissing(f"{where}: not stored")
        try:
            with staging(into) as tmp:
                for entry in manifest.files:
                    await self._download(
                        self._key(model, version, f"{manifest.digest}/{entry.path}"), tmp, entry, where
                    )
        except (BaseError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) and exc.filename is None:
                raise ArtifactCorrupt(f"{where}: a file of the manifest is missing: {_reason(exc)}") from exc
            raise ArtifactError(f"{where}: cannot fetch it: {_reason(exc)}") from exc
        return manifest

    async def _download(self, key: str, tmp: Path, entry: FileEntry, where: str) -> None:
        target = tmp / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        h, size = hashlib.sha256(), 0
        result = await obstore.get_async(self._store, key)
        with target.open("wb") as out:
            async for chunk in result.stream(min_chunk_size=_CHUNK):
                data = memoryview(chunk)
                size += len(data)
                if size > entry.size:
                    raise ArtifactCorrupt(f"{where}: {entry.path} is larger than its manifest says")
                h.update(data)
                out.write(data)
        if (size, h.hexdigest()) != (entry.size, entry.sha256):
            raise ArtifactCorrupt(f"{where}: {entry.path} does not match its manifest")
