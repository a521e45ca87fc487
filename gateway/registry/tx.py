"""``Tx``: the writes a registry transaction can make, each validated before it touches a row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, select, text

from gateway.registry import queries as q
from gateway.registry import replicas as r
from gateway.registry import schema as t
from gateway.registry import validate as check
from gateway.registry.engine import GLOBAL_LOCK, advisory_key
from gateway.registry.records import ModelRecord, Policy, RegistryInvalid, VersionRecord


class Tx:
    """One open write transaction of a ``RegistryStore`` (made by ``RegistryStore.transaction``).

    Every method checks its arguments and raises ``RegistryInvalid`` with a clear message on bad ones
    (unknown model, missing version, out-of-range percent...). Reads see the transaction's own
    writes. ``message`` and ``detail`` may be changed before the block ends: they go into the
    history row written at commit. ``revision`` is the new revision once the block has committed.

    On PostgreSQL a transaction for one model holds that model's advisory lock (and a shared
    lock on "all models"); a transaction with ``model=None`` holds "all models" exclusively. Any
    other model a transaction touches is locked on first touch (two transactions touching each
    other's models may then deadlock: PostgreSQL aborts one of them with an error). On SQLite
    the whole database is locked for writing (BEGIN IMMEDIATE). Either way a read-modify-write
    is never lost.
    """

    def __init__(
        self, conn: Connection, *, model: str | None, message: str, detail: dict[str, Any], actor: str = "gateway"
    ) -> None:
        self._conn = conn
        self.actor = actor
        self._pg = conn.dialect.name == "postgresql"
        self._locked: set[str] = set()
        self._all_locked = False
        self.model_name = model
        self.message = message
        self.detail = detail
        self.revision: int | None = None

    def _lock_scope(self) -> None:
        """Take the transaction's locks (PostgreSQL; SQLite's BEGIN IMMEDIATE already has)."""
        if not self._pg:
            return
        if self.model_name is None:
            self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": GLOBAL_LOCK})
            self._all_locked = True
        else:
            self._conn.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": GLOBAL_LOCK})
            self._touch(self.model_name)

    def _touch(self, model: str) -> None:
        # Lock before the first read, so that what is read is still true when written back.
        if self._pg and not self._all_locked and model not in self._locked:
            key = advisory_key(f"gateway_registry:model:{model}")
            self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            self._locked.add(model)

    def _model_exists(self, model: str) -> bool:
        found = self._conn.execute(select(t.models.c.name).where(t.models.c.name == model)).first()
        return found is not None

    def _require_model(self, model: object) -> str:
        name = check.model_name(model)
        self._touch(name)
        if not self._model_exists(name):
            raise RegistryInvalid(f"unknown model '{name}'")
        return name

    def _version_row(self, model: str, version: int) -> Row[Any] | None:
        query = select(t.versions).where(t.versions.c.model == model, t.versions.c.version == version)
        return self._conn.execute(query).first()

    def _require_version(self, model: str, version: object, what: str = "version") -> VersionRecord:
        number = check.version_number(version, what)
        row = self._version_row(model, number)
        if row is None:
            raise RegistryInvalid(f"model '{model}' has no version {number} ({what})")
        return q.version_from_row(row)

    def ensure_model(self, name: str) -> bool:
        """Create model ``name`` (with an empty policy) unless it exists; True if it was created."""
        name = check.model_name(name)
        self._touch(name)
        if self._model_exists(name):
            return False
        self._conn.execute(t.models.insert().values(name=name, created_at=t.utcnow()))
        self._conn.execute(t.policies.insert().values(model=name, **q.policy_values(Policy())))
        return True

    def upsert_version(
        self, model: str, version: int, backend: str, artifact: str, state: str = "available"
    ) -> VersionRecord:
        """Add version ``version`` of ``model``, or replace its backend, artifact and state.

        The model must exist (``ensure_model``). ``created_at`` is kept on an update.
        """
        model = self._require_model(model)
        number = check.version_number(version)
        values = {
            "backend": check.backend(backend),
            "artifact": check.artifact(artifact),
            "state": check.version_state(state),
            "updated_at": t.utcnow(),
        }
        if self._version_row(model, number) is None:
            insert = t.versions.insert().values(model=model, version=number, created_at=values["updated_at"])
            self._conn.execute(insert.values(**values))
        else:
            where = (t.versions.c.model == model) & (t.versions.c.version == number)
            self._conn.execute(t.versions.update().where(where).values(**values))
        return self._require_version(model, number)

    def set_version_state(self, model: str, version: int, state: str) -> VersionRecord:
        """Set the state ('available' | 'retired') of an existing version."""
        model = self._require_model(model)
        current = self._require_version(model, version)
        new_state = check.version_state(state)
        where = (t.versions.c.model == model) & (t.versions.c.version == current.version)
        self._conn.execute(t.versions.update().where(where).values(state=new_state, updated_at=t.utcnow()))
        return self._require_version(model, current.version)

    def set_label(self, model: str, name: str, version: int) -> None:
        """Point label ``name`` of ``model`` at an existing version (creating or moving it)."""
        model = self._require_model(model)
        name = check.label_name(name)
        target = self._require_version(model, version).version
        where = (t.labels.c.model == model) & (t.labels.c.name == name)
        if self._conn.execute(select(t.labels.c.name).where(where)).first() is None:
            self._conn.execute(t.labels.insert().values(model=model, name=name, version=target))
        else:
            self._conn.execute(t.labels.update().where(where).values(version=target))

    def delete_label(self, model: str, name: str) -> bool:
        """Remove label ``name`` of ``model``; True if it existed (removing a missing one is a no-op)."""
        model = self._require_model(model)
        name = check.label_name(name)
        where = (t.labels.c.model == model) & (t.labels.c.name == name)
        return bool(self._conn.execute(t.labels.delete().where(where)).rowcount)

    def get_policy(self, model: str) -> Policy:
        """The traffic policy of an existing model (a default ``Policy()`` if none was set)."""
        model = self._require_model(model)
        row = self._conn.execute(select(t.policies).where(t.policies.c.model == model)).first()
        return q.policy_from_row(row) if row is not None else Policy()

    def set_policy(self, model: str, policy: Policy) -> None:
        """Replace the traffic policy of an existing model.

        Percentages must be 0-100, a non-zero percentage needs its version, and canary and
        shadow versions must be versions of the model (any state: whether routing to a retired
        version is allowed is the rollout service's decision).
        """
        model = self._require_model(model)
        policy = check.policy_shape(policy)
        if policy.canary_version is not None:
            self._require_version(model, policy.canary_version, "canary_version")
        if policy.shadow_version is not None:
            self._require_version(model, policy.shadow_version, "shadow_version")
        values = q.policy_values(policy)
        where = t.policies.c.model == model
        if self._conn.execute(select(t.policies.c.model).where(where)).first() is None:
            self._conn.execute(t.policies.insert().values(model=model, **values))
        else:
            self._conn.execute(t.policies.update().where(where).values(**values))

    def stage_version(self, model: str, version: int, backend: str) -> None:
        """Stage ``version`` of ``model`` on ``backend``: the stack's agents load it (it is in
        ``desired``) while routing ignores it. Staging it again replaces the row. The model and
        the version need not exist yet; the transaction's actor is recorded."""
        name = check.model_name(model)
        self._touch(name)
        r.stage(self._conn, name, version, backend, self.actor)

    def unstage_version(self, model: str, version: int) -> bool:
        """Remove the staging of ``version`` of ``model``; True if it was staged."""
        name = check.model_name(model)
        self._touch(name)
        return r.unstage(self._conn, name, version)

    def model(self, name: str) -> ModelRecord | None:
        """Model ``name`` as this transaction sees it (its own writes included), or None."""
        name = check.model_name(name)
        self._touch(name)
        return q.read_models(self._conn, name).get(name)
