"""What each backend must hold, read from a registry snapshot, and its start-up file kept equal to
it; the backends' own default versions kept on the stable ones.

The registry's available versions of a backend are exactly what that backend must have loaded;
each model's ``stable`` version is TorchServe's default. Deploys, retires and restores send these
sets to the backends, and every change rewrites the backends' start-up files from them, so that a
backend that restarts comes back with the registry's state and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from gateway.core.errors import GatewayError
from gateway.core.types import Backend
from gateway.registry.records import Snapshot
from gateway.routing.router import Router

log = logging.getLogger(__name__)


def loaded_versions(snapshot: Snapshot, backend: str) -> dict[str, set[int]]:
    """Every version of ``backend`` that must stay loaded: the registry's available ones."""
    keep: dict[str, set[int]] = {}
    for name, record in snapshot.models.items():
        for version, stored in record.versions.items():
            if stored.backend == backend and stored.state == "available":
                keep.setdefault(name, set()).add(version)
    return keep


def default_versions(snapshot: Snapshot, backend: str) -> dict[str, int]:
    """Each model's ``stable`` version where it is an available version of ``backend``."""
    found: dict[str, int] = {}
    for name, record in snapshot.models.items():
        stable = record.labels.get("stable")
        stored = record.versions.get(stable) if stable is not None else None
        if stored is not None and stored.backend == backend and stored.state == "available":
            found[name] = stored.version
    return found


async def write_startup(kind: str, backend: Backend, snapshot: Snapshot) -> None:
    """Rewrite ``backend``'s start-up file from ``snapshot``; a failure is logged, never raised
    (the next change or probe round writes it again). Call it holding the backend's lock."""
    keep = loaded_versions(snapshot, kind)
    try:
        if await asyncio.to_thread(backend.write_startup, keep, default_versions(snapshot, kind)):
            log.info("%s start-up file now holds %s", kind, {m: sorted(v) for m, v in sorted(keep.items())})
    except OSError as exc:
        log.warning("could not write %s's start-up file: %s", kind, exc)


def stable_versions(router: Router) -> dict[str, int]:
    """Each routed model's ``stable`` version, from the routing table."""
    return {name: r.labels["stable"] for name, r in router.table.models.items() if "stable" in r.labels}


async def sync_defaults(router: Router, models: Iterable[str] | None = None) -> None:
    """Make each backend's own default version of ``models`` (all: None) their stable version.

    Best effort: the routing change stands whatever the backend answers (the gateway always
    addresses explicit versions); a failure is logged. TorchServe needs it so that it never
    keeps a version it may be asked to unregister as its default.
    """
    table = router.table.models
    for name in sorted(table if models is None else models):
        routes = table.get(name)
        version = routes.labels.get("stable") if routes else None
        target = routes.versions.get(version) if routes and version is not None else None
        if target is None:
            continue
        try:
            await target.backend.set_default(name, target.version)
        except GatewayError as exc:
            log.warning("could not make %s v%d %s's default: %s", name, version, target.backend.kind, exc.message)
