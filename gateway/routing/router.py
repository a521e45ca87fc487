"""The router: holds the current routing table and swaps it whole when the registry changes.

The table is built from a registry snapshot (which versions are routable, labels, traffic and
shadow policies) and the model store (signatures). Requests only ever read ``router.table``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from gateway import metrics
from gateway.artifacts import ArtifactError, ArtifactStore
from gateway.core.errors import GatewayError
from gateway.core.tensors import Signature
from gateway.core.types import Backend, Target
from gateway.registry.records import Snapshot
from gateway.routing.table import ModelRoutes, RoutePolicy, RoutingTable

log = logging.getLogger(__name__)


class Router:
    """Owns the in-memory routing table of one gateway process."""

    def __init__(self, backends: Mapping[str, Backend], store: Path, artifacts: ArtifactStore | None = None) -> None:
        self.backends = dict(backends)
        self.store = store
        #: Where a version's signature.json is when this process's model store lacks it (another
        #: gateway replica deployed it, or this one restarted on an empty store).
        self.artifacts = artifacts
        self.table = RoutingTable()
        self.revision = -1
        self._signatures: dict[tuple[str, int, str], Signature] = {}
        self._lock = asyncio.Lock()

    async def _signature(self, model: str, version: int, backend: Backend) -> Signature | None:
        key = (model, version, backend.kind)
        if key in self._signatures:
            return self._signatures[key]
        signature = Signature.load(self.store / model / str(version) / "signature.json")
        if signature is None and self.artifacts is not None:
            try:
                stored = await self.artifacts.read(model, version, "signature.json")
                signature = Signature.from_json(json.loads(stored)) if stored is not None else None
            except (ArtifactError, ValueError) as exc:  # the backend may still describe it
                log.warning("%s v%d: no signature from %s: %s", model, version, self.artifacts.description, exc)
        if signature is None:
            try:
                signature = await backend.signature(model, version)
            except GatewayError as exc:  # asked again at the next rebuild or request
                log.warning("no signature for %s v%d yet: %s", model, version, exc.message)
        if signature is not None:
            self._signatures[key] = signature
        return signature

    async def apply(self, snapshot: Snapshot) -> RoutingTable:
        """Build a table from ``snapshot`` and swap it in, unless a newer one is already in."""
        async with self._lock:
            if snapshot.revision < self.revision:
                return self.table
            models: dict[str, ModelRoutes] = {}
            for name, record in snapshot.models.items():
                targets: dict[int, Target] = {}
                for version, stored in record.versions.items():
                    backend = self.backends.get(stored.backend)
                    if stored.state != "available" or backend is None:
                        continue
                    signature = await self._signature(name, version, backend)
                    targets[version] = Target(name, version, backend, signature)
                if not targets:
                    continue
                p = record.policy
                policy = RoutePolicy(
                    p.canary_version, p.canary_percent, p.sticky_header, p.shadow_version, p.shadow_percent, p.guard
                )
                labels = {k: v for k, v in record.labels.items() if v in targets}
                models[name] = ModelRoutes(name, targets, labels, policy)
            self.table = RoutingTable(models)  # one reference swap: requests see old or new, whole
            log.info("routing table at revision %d (was %d)", snapshot.revision, self.revision)
            self.revision = snapshot.revision
            _export_mappings(self.table)
            return self.table

    def forget_signature(self, model: str, version: int) -> None:
        """Drop a cached signature (a version re-deployed with other content)."""
        for key in [k for k in self._signatures if k[:2] == (model, version)]:
            del self._signatures[key]


def _export_mappings(table: RoutingTable) -> None:
    """Set ``gateway_model_version_info`` to exactly the current label -> version mappings."""
    rows: list[tuple[str, str, str, str]] = []
    for name, routes in table.models.items():
        for label, version in routes.labels.items():
            rows.append((name, label, str(version), routes.versions[version].backend.kind))
        stable = routes.stable().target
        rows.append((name, "default", str(stable.version), stable.backend.kind))
    metrics.MODEL_VERSION_INFO.set(rows)
