"""Start-up adoption: an empty registry takes what the model store holds.

A gateway started on a store with no registry behind it (a first start, or a registry that was
reset) would route nothing; instead it records every version it finds, with each model's labels
from the desired-state file where they name a version that is there, and ``stable`` the highest
version otherwise. The adoption is one transaction and one history entry, written through the
rollout service like any other change (so routing, the backends' defaults and start-up files
follow it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gateway.registry.store import Tx
from gateway.rollouts.service import RolloutService
from gateway.routing.discovery import StoredVersion, read_state, scan_store

log = logging.getLogger(__name__)


async def adopt_if_empty(rollouts: RolloutService, state_file: Path | None) -> bool:
    """With an empty registry, adopt what the model store holds; True if it did.

    Each model's highest version becomes ``stable`` unless the desired-state file says
    otherwise. The adoption is one history entry.
    """
    if not await rollouts.read(rollouts.registry.is_empty):
        return False
    stored = scan_store(rollouts.store)
    wanted = read_state(state_file)
    if not stored:
        return False
    await rollouts.write(
        actor="gateway",
        action="adopt",
        model=None,
        change=lambda tx: _adopt(tx, stored, wanted),
        message=f"adopted {len(stored)} versions from the model store",
        detail={"versions": [f"{v.model}/{v.version}" for v in stored]},
    )
    return True


def _adopt(tx: Tx, stored: list[StoredVersion], wanted: dict[str, Any]) -> None:
    highest: dict[str, int] = {}
    for v in stored:
        tx.ensure_model(v.model)
        tx.upsert_version(v.model, v.version, v.backend, f"{v.model}/{v.version}")
        highest[v.model] = max(highest.get(v.model, 0), v.version)
    present = {(v.model, v.version) for v in stored}
    for model, top in highest.items():
        labels = {str(k): int(n) for k, n in ((wanted.get(model) or {}).get("labels") or {}).items()}
        for label, version in list(labels.items()):
            if (model, version) not in present:  # the state file may name versions not here
                log.warning("state file: %s label %s -> version %d not in the store", model, label, version)
                del labels[label]
        labels.setdefault("stable", top)
        for label, version in labels.items():
            tx.set_label(model, label, version)
