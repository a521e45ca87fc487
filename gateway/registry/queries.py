"""Statements shared by the store and its transactions: reading models, the history and the
revision, and the bookkeeping every write transaction ends with."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, select, text, update

from gateway.registry import schema as t
from gateway.registry.engine import NOTIFY_CHANNEL
from gateway.registry.records import HistoryRecord, ModelRecord, Policy, VersionRecord


def policy_from_row(row: Row[Any]) -> Policy:
    """The ``Policy`` stored in a ``registry_policies`` row."""
    return Policy(
        canary_version=row.canary_version,
        canary_percent=float(row.canary_percent),
        sticky_header=row.sticky_header,
        shadow_version=row.shadow_version,
        shadow_percent=float(row.shadow_percent),
        stable_history=tuple(int(v) for v in row.stable_history or ()),
        guard=dict(row.guard) if row.guard is not None else None,
        min_ready=int(row.min_ready) if row.min_ready is not None else None,
    )


def policy_values(policy: Policy) -> dict[str, Any]:
    """The column values that store ``policy`` (copies, so later changes to it do not leak in)."""
    return {
        "canary_version": policy.canary_version,
        "canary_percent": float(policy.canary_percent),
        "sticky_header": policy.sticky_header,
        "shadow_version": policy.shadow_version,
        "shadow_percent": float(policy.shadow_percent),
        "stable_history": [int(v) for v in policy.stable_history],
        "guard": dict(policy.guard) if policy.guard is not None else None,
        "min_ready": policy.min_ready,
    }


def version_from_row(row: Row[Any]) -> VersionRecord:
    """The ``VersionRecord`` stored in a ``registry_versions`` row."""
    return VersionRecord(
        model=row.model,
        version=int(row.version),
        backend=row.backend,
        artifact=row.artifact,
        state=row.state,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def read_models(conn: Connection, name: str | None = None) -> dict[str, ModelRecord]:
    """Every model (or just ``name``) with all its versions, labels and policy, by name."""
    model_q = select(t.models.c.name).order_by(t.models.c.name)
    version_q = select(t.versions).order_by(t.versions.c.model, t.versions.c.version)
    label_q = select(t.labels).order_by(t.labels.c.model, t.labels.c.name)
    policy_q = select(t.policies)
    if name is not None:
        model_q = model_q.where(t.models.c.name == name)
        version_q = version_q.where(t.versions.c.model == name)
        label_q = label_q.where(t.labels.c.model == name)
        policy_q = policy_q.where(t.policies.c.model == name)
    names = list(conn.execute(model_q).scalars())
    found_versions: dict[str, dict[int, VersionRecord]] = {n: {} for n in names}
    for row in conn.execute(version_q):
        found_versions.setdefault(row.model, {})[int(row.version)] = version_from_row(row)
    found_labels: dict[str, dict[str, int]] = {n: {} for n in names}
    for row in conn.execute(label_q):
        found_labels.setdefault(row.model, {})[row.name] = int(row.version)
    found_policies = {row.model: policy_from_row(row) for row in conn.execute(policy_q)}
    return {
        n: ModelRecord(
            name=n,
            versions=found_versions[n],
            labels=found_labels[n],
            policy=found_policies.get(n, Policy()),
        )
        for n in names
    }


def read_revision(conn: Connection) -> int:
    """The registry's current revision."""
    return int(conn.execute(select(t.meta.c.revision).where(t.meta.c.id == 1)).scalar_one())


def read_history(conn: Connection, model: str | None, limit: int) -> list[HistoryRecord]:
    """Up to ``limit`` history rows (of ``model`` only, if given), newest first."""
    query = select(t.history).order_by(t.history.c.id.desc()).limit(limit)
    if model is not None:
        query = query.where(t.history.c.model == model)
    return [
        HistoryRecord(
            id=int(row.id),
            at=row.at,
            model=row.model,
            action=row.action,
            actor=row.actor,
            outcome=row.outcome,
            message=row.message,
            detail=dict(row.detail or {}),
        )
        for row in conn.execute(query)
    ]


def finish_write(
    conn: Connection,
    *,
    model: str | None,
    action: str,
    actor: str,
    outcome: str,
    message: str,
    detail: dict[str, Any],
) -> int:
    """Append one history row, bump the revision and (PostgreSQL) notify the other replicas.

    Returns the new revision. Runs inside the caller's transaction: the row, the bump and the
    notification all take effect at its commit, or not at all (see ``bump_revision``).
    """
    conn.execute(
        t.history.insert().values(
            at=t.utcnow(),
            model=model,
            action=action,
            actor=actor,
            outcome=outcome,
            message=message,
            detail=detail,
        )
    )
    return bump_revision(conn)


def bump_revision(conn: Connection) -> int:
    """Bump the revision and (PostgreSQL) notify the other replicas; return the new revision.

    A change without a history row (an unstaged version) still makes every watcher re-read. Runs
    inside the caller's transaction; the update of the meta row holds its row lock until commit,
    so revisions are handed out in commit order.
    """
    bump = update(t.meta).where(t.meta.c.id == 1).values(revision=t.meta.c.revision + 1)
    revision = int(conn.execute(bump.returning(t.meta.c.revision)).scalar_one())
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": str(revision)},
        )
    return revision
