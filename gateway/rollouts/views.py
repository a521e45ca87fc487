"""Read views of the rollout service for the admin API: status of models and the audit history."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.core.errors import NotFound
from gateway.core.names import require_model_name
from gateway.registry import ReplicaRecord
from gateway.registry.records import ModelRecord
from gateway.rollouts.answers import (
    HistoryAnswer,
    HistoryEntry,
    ModelStatus,
    ReplicaVersionView,
    ReplicaView,
    ShadowResult,
    ShadowView,
    StatusAnswer,
    TrafficView,
    VersionStatus,
)
from gateway.rollouts.service import RolloutService


async def status_view(service: RolloutService, model: str | None = None) -> StatusAnswer:
    """Versions (with what their backend reports), labels, policies and shadow results."""
    if model is not None:
        require_model_name(model)
    snapshot = await service.snapshot()
    if model is not None and model not in snapshot.models:
        raise NotFound(f"model '{model}' not found")
    names = [model] if model is not None else sorted(snapshot.models)
    models = [await _model_status(service, snapshot.models[name]) for name in names]
    replicas = await service.read(service.registry.replicas)
    # Backend replicas with agents (issue 15): shown once any has registered.
    views = [replica_view(r, model) for r in replicas] if replicas else None
    return StatusAnswer(revision=snapshot.revision, models=models, replicas=views)


def replica_view(replica: ReplicaRecord, model: str | None = None) -> ReplicaView:
    """One backend replica with its per-version states (``model``'s only, if given)."""
    now = datetime.now(UTC)
    return ReplicaView(
        replica=replica.replica_id,
        stack=replica.stack,
        address=replica.address,
        host=replica.host,
        heartbeat_age_seconds=round((now - replica.heartbeat_at).total_seconds(), 1),
        versions=[
            ReplicaVersionView(
                model=v.model,
                version=v.version,
                state=v.state,
                error=v.error or None,
                updated_at=v.updated_at.isoformat(),
            )
            for v in replica.versions
            if model is None or v.model == model
        ],
    )


async def _model_status(service: RolloutService, record: ModelRecord) -> ModelStatus:
    versions = []
    for number, stored in sorted(record.versions.items()):
        entry = VersionStatus(version=number, backend=stored.backend, state=stored.state)
        if stored.state == "available" and stored.backend in service.backends:
            reported = await service.backends[stored.backend].status(record.name, number)
            entry = entry.model_copy(update={"backend_state": reported.state, "backend_error": reported.error or None})
        versions.append(entry)
    p = record.policy
    return ModelStatus(
        model=record.name,
        versions=versions,
        labels=dict(sorted(record.labels.items())),
        traffic=TrafficView(canary=p.canary_version, percent=p.canary_percent, sticky_header=p.sticky_header),
        shadow=ShadowView(version=p.shadow_version, percent=p.shadow_percent),
        shadow_results=[ShadowResult.model_validate(s) for s in service.shadow.for_model(record.name)],
        stable_history=list(p.stable_history),
        min_ready=p.min_ready,
    )


async def history_view(service: RolloutService, model: str | None, limit: int) -> HistoryAnswer:
    """Up to ``limit`` history entries, newest first (only ``model``'s if given)."""
    if model is not None:
        require_model_name(model)
    rows = await service.read(lambda: service.registry.history(model, limit))
    entries = [
        HistoryEntry(
            id=r.id,
            at=r.at.isoformat(),
            model=r.model,
            action=r.action,
            actor=r.actor,
            outcome=r.outcome,
            message=r.message,
            detail=r.detail,
        )
        for r in rows
    ]
    return HistoryAnswer(history=entries)
