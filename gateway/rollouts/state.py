"""The desired state as a declarative document: labels, traffic and shadow per model (and
``min_ready`` where it is set: absent means the default, all current replicas).

``export`` writes what the registry holds; ``apply`` makes the registry match a document, in one
transaction, and does nothing (no history entry) when it already matches. Each model's entry is a
``Desired`` command of the routing plan (``gateway.rollouts.plan``): the dry run is its plan
against the current state, the change writes the plan made inside the transaction. Teams keep
the file in git. Versions themselves come from deploys, not from this file.
"""

from __future__ import annotations

from typing import Any

from gateway.core import names
from gateway.core.errors import BadRequest
from gateway.registry import validate as check
from gateway.registry.records import ModelRecord, RegistryInvalid, Snapshot
from gateway.registry.store import Tx
from gateway.rollouts.answers import ApplyAnswer
from gateway.rollouts.plan import Desired, Plan, RoutingState, plan, write_state
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
        if p.min_ready is not None:  # only when set: documents without it stay as they were
            entry["min_ready"] = p.min_ready
        models[name] = entry
    return {"models": models}


def desired(name: str, spec: Any) -> Desired:
    """Model ``name``'s entry of a state document as the state it asks for (BadRequest naming the
    entry's field when it is malformed)."""
    if not isinstance(spec, dict):
        raise BadRequest(f"models.{name} must be a mapping with labels, traffic and shadow")
    unknown = set(spec) - {"labels", "traffic", "shadow", "min_ready"}
    if unknown:
        raise BadRequest(f"models.{name}: unknown keys {sorted(unknown)} (expected labels, traffic, shadow, min_ready)")
    try:
        min_ready = check.min_ready(spec.get("min_ready"))
    except RegistryInvalid as exc:
        raise BadRequest(f"models.{name}.{exc}") from None
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
    return Desired(
        labels=dict(labels),
        canary=traffic.get("canary"),
        percent=float(traffic.get("percent") or 0),
        sticky_header=traffic.get("sticky_header"),
        shadow_version=shadow.get("version"),
        shadow_percent=float(shadow.get("percent") or 0),
        min_ready=min_ready,
    )


def _dry_run(record: ModelRecord, wanted: Desired) -> Plan:
    """The plan of one model's entry; a registry rule it breaks is the client's 400 (as it is
    when the change writes it: ``RolloutService.write``)."""
    try:
        return plan(record, wanted)
    except RegistryInvalid as exc:
        raise BadRequest(str(exc)) from None


async def apply_state(service: RolloutService, document: Any, actor: str) -> ApplyAnswer:
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
    wanted = {name: desired(name, spec) for name, spec in models.items()}
    # A dry run first: plan against the current state, so an invalid document changes nothing.
    if not any(_dry_run(snapshot.models[name], want).facts["changes"] for name, want in wanted.items()):
        return ApplyAnswer(changed=False, changes=[])
    applied: list[str] = []

    def change(tx: Tx) -> None:
        for name, want in wanted.items():
            record = tx.model(name)
            assert record is not None
            step = plan(record, want)
            write_state(tx, name, RoutingState.of(record), step.state)
            applied.extend(step.facts["changes"])
        tx.message = "; ".join(applied)
        tx.detail = {"changes": applied}

    await service.write(actor=actor, action="apply", model=None, change=change)
    return ApplyAnswer(changed=True, changes=applied)
