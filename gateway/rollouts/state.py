"""The desired state as a declarative document: labels, traffic and shadow per model.

``export`` writes what the registry holds; ``apply`` makes the registry match a document, in one
transaction, and does nothing (no history entry) when it already matches. Teams keep the file in
git. Versions themselves come from deploys, not from this file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.core import names
from gateway.core.errors import BadRequest
from gateway.registry.records import ModelRecord, Snapshot
from gateway.registry.store import Tx
from gateway.rollouts.service import RolloutService


def export_state(snapshot: Snapshot) -> dict[str, Any]:
    """The registry's routing state as a plain document."""
    models: dict[str, Any] = {}
    for name, record in sorted(snapshot.models.items()):
        p = record.policy
        entry: dict[str, Any] = {"labels": dict(sorted(record.labels.items()))}
        entry["traffic"] = {
            "canary": p.canary_version,
            "percent": p.canary_percent,
            "sticky_header": p.sticky_header,
        }
        entry["shadow"] = {"version": p.shadow_version, "percent": p.shadow_percent}
        models[name] = entry
    return {"models": models}


def _desired(name: str, spec: Any) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    if not isinstance(spec, dict):
        raise BadRequest(f"models.{name} must be a mapping with labels, traffic and shadow")
    unknown = set(spec) - {"labels", "traffic", "shadow"}
    if unknown:
        raise BadRequest(f"models.{name}: unknown keys {sorted(unknown)} (expected labels, traffic, shadow)")
    labels = spec.get("labels") or {}
    if not isinstance(labels, dict):
        raise BadRequest(f"models.{name}.labels must map label names to positive version numbers")
    try:
        for label, version in labels.items():
            names.label_name(label)
            names.version_number(version, f"models.{name}.labels.{label}")
    except names.InvalidName as exc:
        raise BadRequest(f"models.{name}.labels: {exc}") from None
    traffic = spec.get("traffic") or {}
    shadow = spec.get("shadow") or {}
    for key, value in (("traffic", traffic), ("shadow", shadow)):
        if not isinstance(value, dict):
            raise BadRequest(f"models.{name}.{key} must be a mapping")
        percent = value.get("percent", 0) or 0
        if not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise BadRequest(f"models.{name}.{key}.percent must be a number in [0, 100], got {percent!r}")
    return dict(labels), traffic, shadow


def _apply_model(tx: Tx, record: ModelRecord, spec: Any) -> list[str]:
    labels, traffic, shadow = _desired(record.name, spec)
    changes: list[str] = []
    for label, number in labels.items():
        found = record.versions.get(number)
        if found is None or found.state != "available":
            raise BadRequest(f"models.{record.name}.labels.{label}: version {number} is not available")
        if record.labels.get(label) != number:
            tx.set_label(record.name, label, number)
            changes.append(f"{record.name} label {label} -> {number}")
    for label in sorted(set(record.labels) - set(labels)):
        tx.delete_label(record.name, label)
        changes.append(f"{record.name} label {label} removed")
    canary = traffic.get("canary")
    share = float(traffic.get("percent") or 0) if canary is not None else 0.0
    shadow_version = shadow.get("version")
    shadow_share = float(shadow.get("percent") or 0) if shadow_version is not None else 0.0
    for what, wanted_version in (("traffic.canary", canary), ("shadow.version", shadow_version)):
        if wanted_version is None:
            continue
        stored = record.versions.get(wanted_version)
        if stored is None or stored.state != "available":
            raise BadRequest(f"models.{record.name}.{what}: version {wanted_version} is not available")
    wanted = replace(
        record.policy,
        canary_version=canary,
        canary_percent=share,
        sticky_header=traffic.get("sticky_header"),
        shadow_version=shadow_version,
        shadow_percent=shadow_share,
    )
    if wanted != record.policy:
        tx.set_policy(record.name, wanted)
        changes.append(f"{record.name} traffic/shadow updated")
    return changes


async def apply_state(service: RolloutService, document: Any, actor: str) -> dict[str, Any]:
    """Make the registry match ``document``; a no-op (and no history) when it already does."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
        raise BadRequest("the state document must be a mapping with a 'models' mapping")
    models: dict[str, Any] = document["models"]
    for name in models:
        if not names.is_model_name(name):
            raise BadRequest(f"models: {names.shown(name)} is not a valid model name: {names.MODEL_RULE}")
    snapshot = await service.snapshot()
    for name in models:
        if name not in snapshot.models:
            raise BadRequest(f"models.{name}: no such model in the registry (deploy it first)")
    # Validate against the current state first, so an invalid document changes nothing.
    dry: list[str] = []

    class DryTx:
        def __getattr__(self, _: str) -> Any:
            return lambda *a, **k: None

    for name, spec in models.items():
        dry += _apply_model(DryTx(), snapshot.models[name], spec)  # type: ignore[arg-type]
    if not dry:
        return {"changed": False, "changes": []}
    applied: list[str] = []

    def change(tx: Tx) -> None:
        for name, spec in models.items():
            record = tx.model(name)
            assert record is not None
            applied.extend(_apply_model(tx, record, spec))
        tx.message = "; ".join(applied)
        tx.detail = {"changes": applied}

    await service.write(actor=actor, action="apply", model=None, change=change)
    return {"changed": True, "changes": applied}
