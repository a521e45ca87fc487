"""Read views of the rollout service for the admin API: status of models and the audit history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.core.errors import NotFound
from gateway.core.names import require_model_name
from gateway.registry import ReplicaRecord
from gateway.rollouts.service import RolloutService


async def status_view(service: RolloutService, model: str | None = None) -> dict[str, Any]:
    """Versions (with what their backend reports), labels, policies and shadow results."""
    if model is not None:
        require_model_name(model)
    snapshot = await service.snapshot()
    if model is not None and model not in snapshot.models:
        raise NotFound(f"model '{model}' not found")
    names = [model] if model is not None else sorted(snapshot.models)
    models = []
    for name in names:
        record = snapshot.models[name]
        versions = []
        for number, stored in sorted(record.versions.items()):
            entry: dict[str, Any] = {"version": number, "backend": stored.backend, "state": stored.state}
            if stored.state == "available" and stored.backend in service.backends:
                reported = await service.backends[stored.backend].status(name, number)
                entry["backend_state"] = reported.state
                if reported.error:
                    entry["backend_error"] = reported.error
            versions.append(entry)
        p = record.policy
        models.append(
            {
                "model": name,
                "versions": versions,
                "labels": dict(sorted(record.labels.items())),
                "traffic": {
                    "canary": p.canary_version,
                    "percent": p.canary_percent,
                    "sticky_header": p.sticky_header,
                },
                "shadow": {"version": p.shadow_version, "percent": p.shadow_percent},
                "shadow_results": service.shadow.for_model(name),
                "stable_history": list(p.stable_history),
            }
        )
    view: dict[str, Any] = {"revision": snapshot.revision, "models": models}
    replicas = await service.read(service.registry.replicas)
    if replicas:  # backend replicas with agents (issue 15): shown once any has registered
        view["replicas"] = [replica_view(r, model) for r in replicas]
    return view


def replica_view(replica: ReplicaRecord, model: str | None = None) -> dict[str, Any]:
    """One backend replica with its per-version states (``model``'s only, if given)."""
    now = datetime.now(UTC)
    return {
        "replica": replica.replica_id,
        "stack": replica.stack,
        "address": replica.address,
        "host": replica.host,
        "heartbeat_age_seconds": round((now - replica.heartbeat_at).total_seconds(), 1),
        "versions": [
            {"model": v.model, "version": v.version, "state": v.state}
            | ({"error": v.error} if v.error else {})
            | {"updated_at": v.updated_at.isoformat()}
            for v in replica.versions
            if model is None or v.model == model
        ],
    }


async def history_view(service: RolloutService, model: str | None, limit: int) -> list[dict[str, Any]]:
    if model is not None:
        require_model_name(model)
    rows = await service.read(lambda: service.registry.history(model, limit))
    return [
        {
            "id": r.id,
            "at": r.at.isoformat(),
            "model": r.model,
            "action": r.action,
            "actor": r.actor,
            "outcome": r.outcome,
            "message": r.message,
            "detail": r.detail,
        }
        for r in rows
    ]
