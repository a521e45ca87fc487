"""Read views of the rollout service for the admin API: status of models and the audit history."""

from __future__ import annotations

from typing import Any

from gateway.core.errors import NotFound
from gateway.core.names import require_model_name
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
    return {"revision": snapshot.revision, "models": models}


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
