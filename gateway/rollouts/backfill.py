"""Versions the gateway serves but the artifact store lacks, stored at start-up (issue 15).

A deploy stores the version it accepts; versions that reached the registry another way (adopted
from the model store into an empty registry, or deployed before an artifact store was configured)
are put into the store once, from the model store, in the background after start-up, so that the
backend replicas' agents can fetch every version the registry wants on them. With the default
artifact store, the model store itself, there is nothing to copy and nothing is written: the local
store computes such a version's manifest when an agent first fetches it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.artifacts import ArtifactError, ArtifactStore, LocalArtifactStore
from gateway.core.errors import GatewayError
from gateway.registry.records import Snapshot
from gateway.rollouts.service import RolloutService

log = logging.getLogger(__name__)


async def store_available(snapshot: Snapshot, model_store: Path, artifacts: ArtifactStore) -> list[tuple[str, int]]:
    """Put each available version whose directory is in ``model_store`` and which ``artifacts``
    does not hold yet; return what was stored. Failures are logged (a version stored with other
    content already stays as stored); concurrent gateway replicas doing the same is harmless."""
    if isinstance(artifacts, LocalArtifactStore) and await asyncio.to_thread(_same, artifacts.root, model_store):
        return []  # the default: the model store is the artifact store, its versions are there already
    stored: list[tuple[str, int]] = []
    for name, record in sorted(snapshot.models.items()):
        for version, entry in sorted(record.versions.items()):
            path = model_store / name / str(version)
            if entry.state != "available" or not path.is_dir():
                continue
            try:
                if await artifacts.manifest(name, version) is not None:
                    continue
                _manifest, created = await artifacts.put(name, version, path)
            except ArtifactError as exc:
                log.warning("could not store %s v%d in the artifact store: %s", name, version, exc)
                continue
            if created:
                stored.append((name, version))
    if stored:
        log.info("stored %d version(s) in %s: %s", len(stored), artifacts.description, stored)
    return stored


async def backfill(service: RolloutService, artifacts: ArtifactStore) -> None:
    """``store_available`` for the registry as it is now (a background task of the gateway)."""
    try:
        snapshot = await service.snapshot()
    except GatewayError as exc:
        log.warning("not storing adopted versions in the artifact store: %s", exc.message)
        return
    await store_available(snapshot, service.settings.model_store, artifacts)


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
