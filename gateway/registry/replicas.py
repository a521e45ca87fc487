"""Backend replicas in the registry: who they are, when they last spoke, what each reports about
the versions it holds, and which versions each stack's replicas should hold.

A stack's replicas should hold the versions the registry has ``available`` on that stack
(``registry_versions``, the same records the gateway routes by) and the versions *staged* on it
(``registry_staged``): a deploy stages a version so the agents load it before it is routed, and
unstages it when it routes it (the version row then keeps it desired) or gives up. Staging is
configuration: it is written in a registry transaction and bumps the revision. Replica rows are
reports, not configuration: writing them neither appends history nor bumps the revision, so a
heartbeat never makes every gateway re-read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, Table, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.registry import schema as t
from gateway.registry import validate as check
from gateway.registry.records import RegistryInvalid

REPLICA_STATES: Final = frozenset({"loading", "ready", "failed"})
"""What a replica reports about one version: being loaded, ready to serve, or failed (with why)."""

MAX_ERROR_CHARS: Final = 4000


@dataclass(frozen=True, slots=True)
class ReplicaVersion:
    """One replica's report on one version."""

    model: str
    version: int
    state: str
    error: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """A backend replica: its stack, the inference address it serves on, its host or pod name,
    its last heartbeat, and its reports per version."""

    replica_id: str
    stack: str
    address: str
    host: str
    started_at: datetime
    heartbeat_at: datetime
    versions: tuple[ReplicaVersion, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class StagedVersion:
    """A version a deploy staged on ``backend``: its agents load it, the gateway does not route it."""

    model: str
    version: int
    backend: str
    staged_at: datetime
    actor: str


def _upsert(conn: Connection, table: Table, keys: tuple[str, ...], values: dict[str, object]) -> None:
    """Insert ``values``, or update the row with the same ``keys`` (one statement on both databases)."""
    insert = postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    statement = insert.values(**values)
    changes = {k: statement.excluded[k] for k in values if k not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))


def replica_id(value: object) -> str:
    """A replica id: 1-128 printable characters."""
    return check.short_text(value, "replica_id", 128)


def register(conn: Connection, rid: str, stack: str, address: str, host: str) -> None:
    """Add the replica, or renew it (a restarted agent); its heartbeat is now. A renewed replica's
    reports are dropped: a restarted agent reports afresh what its backend holds, and until then
    no gateway takes an old "ready" for the truth."""
    now = t.utcnow()
    conn.execute(delete(t.replica_versions).where(t.replica_versions.c.replica_id == replica_id(rid)))
    values = {
        "replica_id": replica_id(rid),
        "stack": check.backend(stack),
        "address": check.short_text(address, "address", 512),
        "host": check.short_text(host, "host", 256),
        "started_at": now,
        "heartbeat_at": now,
    }
    _upsert(conn, t.replicas, ("replica_id",), values)


def heartbeat(conn: Connection, rid: str) -> bool:
    """Mark the replica alive now; False if it is not registered (removed meanwhile)."""
    where = t.replicas.c.replica_id == replica_id(rid)
    return bool(conn.execute(update(t.replicas).where(where).values(heartbeat_at=t.utcnow())).rowcount)


def report(conn: Connection, rid: str, model: str, version: int, state: str, error: str = "") -> None:
    """Record the replica's state of one version (``REPLICA_STATES``), with the error if it failed."""
    if state not in REPLICA_STATES:
        raise RegistryInvalid(f"replica state must be one of {sorted(REPLICA_STATES)}, got {state!r}")
    if not isinstance(error, str):
        raise RegistryInvalid(f"error must be a string, got {type(error).__name__}")
    values = {
        "replica_id": replica_id(rid),
        "model": check.model_name(model),
        "version": check.version_number(version),
        "state": state,
        "error": error[:MAX_ERROR_CHARS],
        "updated_at": t.utcnow(),
    }
    _upsert(conn, t.replica_versions, ("replica_id", "model", "version"), values)


def forget(conn: Connection, rid: str, model: str, version: int) -> None:
    """Remove the replica's report on a version (it no longer holds it)."""
    c = t.replica_versions.c
    conn.execute(
        delete(t.replica_versions).where(
            (c.replica_id == replica_id(rid)) & (c.model == model) & (c.version == int(version))
        )
    )


def deregister(conn: Connection, rid: str) -> bool:
    """Remove the replica and its reports (its agent is stopping); True if it was registered."""
    rid = replica_id(rid)
    conn.execute(delete(t.replica_versions).where(t.replica_versions.c.replica_id == rid))
    return bool(conn.execute(delete(t.replicas).where(t.replicas.c.replica_id == rid)).rowcount)


def read(conn: Connection, stack: str | None = None) -> list[ReplicaRecord]:
    """Every replica (of ``stack`` only, if given) with its reports, by id."""
    query = select(t.replicas).order_by(t.replicas.c.replica_id)
    states = select(t.replica_versions).order_by(
        t.replica_versions.c.replica_id, t.replica_versions.c.model, t.replica_versions.c.version
    )
    if stack is not None:
        query = query.where(t.replicas.c.stack == stack)
    found: dict[str, list[ReplicaVersion]] = {}
    for row in conn.execute(states):
        found.setdefault(row.replica_id, []).append(
            ReplicaVersion(row.model, int(row.version), row.state, row.error, row.updated_at)
        )
    return [
        ReplicaRecord(
            row.replica_id,
            row.stack,
            row.address,
            row.host,
            row.started_at,
            row.heartbeat_at,
            tuple(found.get(row.replica_id, ())),
        )
        for row in conn.execute(query)
    ]


def stage(conn: Connection, model: str, version: int, backend: str, actor: str) -> None:
    """Stage ``version`` of ``model`` on ``backend`` (or stage it again: backend, time and actor
    replaced). The model and the version need not exist yet."""
    values = {
        "model": check.model_name(model),
        "version": check.version_number(version),
        "backend": check.backend(backend),
        "staged_at": t.utcnow(),
        "actor": check.short_text(actor, "actor", 128),
    }
    _upsert(conn, t.staged, ("model", "version"), values)


def unstage(conn: Connection, model: str, version: int) -> bool:
    """Remove the staging of ``version`` of ``model``; True if it was staged."""
    c = t.staged.c
    where = (c.model == check.model_name(model)) & (c.version == check.version_number(version))
    return bool(conn.execute(delete(t.staged).where(where)).rowcount)


def staged(conn: Connection, stack: str | None = None) -> list[StagedVersion]:
    """Every staged version (on ``stack`` only, if given), by model and version."""
    c = t.staged.c
    query = select(t.staged).order_by(c.model, c.version)
    if stack is not None:
        query = query.where(c.backend == check.backend(stack))
    return [
        StagedVersion(row.model, int(row.version), row.backend, row.staged_at, row.actor) for row in conn.execute(query)
    ]


Holding = dict[str, frozenset[int]]


def holdings(conn: Connection, stack: str) -> tuple[Holding, Holding]:
    """What ``stack``'s replicas should hold: the versions the registry has available on it and
    those staged on it; and, of those, what the stack serves (the available ones), in one query."""
    c, s = t.versions.c, t.staged.c
    stack = check.backend(stack)
    available = select(c.model, c.version, literal(True).label("serving"))
    available = available.where((c.backend == stack) & (c.state == "available"))
    staged = select(s.model, s.version, literal(False).label("serving")).where(s.backend == stack)
    wanted: dict[str, set[int]] = {}
    serving: dict[str, set[int]] = {}
    for row in conn.execute(available.union_all(staged)):
        wanted.setdefault(row.model, set()).add(int(row.version))
        if row.serving:
            serving.setdefault(row.model, set()).add(int(row.version))
    return _frozen(wanted), _frozen(serving)


def desired(conn: Connection, stack: str) -> Holding:
    """The versions ``stack``'s replicas should hold: those the registry has available on it, and
    those staged on it."""
    return holdings(conn, stack)[0]


def _frozen(versions: dict[str, set[int]]) -> Holding:
    return {model: frozenset(found) for model, found in sorted(versions.items())}
