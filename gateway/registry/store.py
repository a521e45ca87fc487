"""``RegistryStore``: the persistent, audited registry of models, versions, labels and policies.

Synchronous on purpose: admin operations are rare and callers run them in a thread
(``asyncio.to_thread``); the request path reads an in-memory snapshot, never the database.
Several gateway replicas can share one PostgreSQL database; each write transaction bumps one
revision number, which is how replicas (``gateway.registry.watch.Watcher``) learn of changes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, select

from gateway.registry import locks
from gateway.registry import queries as q
from gateway.registry import replicas as r
from gateway.registry import schema as t
from gateway.registry import validate as check
from gateway.registry.engine import (
    BEGIN_OPTION,
    create_registry_engine,
    normalize_url,
    run_migrations,
    translate_unavailable,
    unavailable_error,
)
from gateway.registry.locks import Release
from gateway.registry.records import HistoryRecord, RegistryInvalid, Snapshot
from gateway.registry.replicas import ReplicaRecord, StagedVersion
from gateway.registry.tx import Tx

__all__ = ["RegistryStore", "Tx"]

MAX_HISTORY_LIMIT = 10_000


class RegistryStore:
    """The registry in a SQLite file or a PostgreSQL database, reached through a connection pool.

    ``url`` is ``sqlite:///path/registry.db`` (WAL mode, 30 s busy timeout; the directory is
    created by ``migrate``) or ``postgresql+psycopg://user@host:5432/db``. Nothing connects until
    the first call. Every method raises ``RegistryUnavailable`` when the database cannot be
    reached (``connect_timeout`` seconds at most for a PostgreSQL connection attempt), and
    ``RegistryInvalid`` on bad arguments. Safe to use from several threads at once.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        if not math.isfinite(connect_timeout) or connect_timeout <= 0:
            raise RegistryInvalid(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
        self._url = normalize_url(url)
        self.connect_timeout = connect_timeout
        self._engine = create_registry_engine(self._url, connect_timeout=connect_timeout)
        self._writing = threading.local()

    def __repr__(self) -> str:
        return f"RegistryStore({self._url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        """``'sqlite'`` or ``'postgresql'``."""
        return self._engine.dialect.name

    @property
    def url(self) -> URL:
        """The database URL (``str()`` of it masks the password; the Watcher connects with it)."""
        return self._url

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest revision; harmless when already there.

        Replicas starting together are serialized, so exactly one of them runs each migration.
        """
        if self.dialect == "sqlite" and self._url.database not in (None, "", ":memory:"):
            directory = Path(self._url.database).expanduser().parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise unavailable_error(self._url, f"cannot create {directory}: {exc}") from exc
        with translate_unavailable(self._url):
            run_migrations(self._engine)

    def lock(self, name: str, *, timeout: float, wait: bool = True) -> Release | None:
        """Take the cross-replica lock ``name`` (see ``gateway.registry.locks``); return its release
        function, or None when ``wait`` is False and another holder has it. Blocking."""
        return locks.acquire(self._engine, name, timeout=timeout, wait=wait)

    def close(self) -> None:
        """Close every pooled connection. The store can still be used: it would reconnect."""
        self._engine.dispose()

    @contextmanager
    def _connect(self, *, write: bool = False, snapshot: bool = False) -> Iterator[Connection]:
        """A connection inside a transaction that commits when the block ends without error."""
        if write and getattr(self._writing, "active", False):
            # The inner write would wait for the outer one's lock, which waits for the inner.
            raise RuntimeError(
                "a registry write transaction is already open in this thread: record failures and "
                "start new transactions after the open one has ended"
            )
        with translate_unavailable(self._url), self._engine.connect() as conn:
            if write and self.dialect == "sqlite":
                conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            if snapshot and self.dialect == "postgresql":
                # Several SELECTs must see one state; READ COMMITTED would re-snapshot each.
                conn.execution_options(isolation_level="REPEATABLE READ")
            if not write:
                with conn.begin():
                    yield conn
                return
            self._writing.active = True
            try:
                with conn.begin():
                    yield conn
            finally:
                self._writing.active = False

    def snapshot(self) -> Snapshot:
        """Every model with all its versions (every state), labels and policy, and the revision
        they are at, all read in one transaction."""
        with self._connect(snapshot=True) as conn:
            revision = q.read_revision(conn)
            return Snapshot(revision=revision, models=q.read_models(conn))

    def revision(self) -> int:
        """The current revision: bumped by every committed write. One small query."""
        with self._connect() as conn:
            return q.read_revision(conn)

    def is_empty(self) -> bool:
        """True if the registry holds no model at all."""
        with self._connect() as conn:
            return conn.execute(select(t.models.c.name).limit(1)).first() is None

    @contextmanager
    def transaction(
        self,
        *,
        actor: str,
        action: str,
        model: str | None,
        message: str = "",
        detail: dict[str, Any] | None = None,
    ) -> Iterator[Tx]:
        """A write transaction: yields a ``Tx`` to make changes with.

        When the block ends normally, one history row (outcome 'ok', with ``tx.message`` and
        ``tx.detail`` as they are then) is appended, the revision is bumped and, on PostgreSQL,
        ``NOTIFY gateway_registry, '<revision>'`` is sent, all in the same database transaction
        as the changes; then it commits and ``tx.revision`` is set. When the block raises, all of
        it is rolled back (no history row: record the failure with ``record``) and the exception
        propagates. Writers of the same model are serialized (see ``Tx``).
        """
        actor = check.short_text(actor, "actor", 128)
        action = check.short_text(action, "action", 64)
        if model is not None:
            model = check.model_name(model)
        if not isinstance(message, str):
            raise RegistryInvalid(f"message must be a string, got {type(message).__name__}")
        start_detail = dict(check.json_object(detail if detail is not None else {}, "detail"))
        with self._connect(write=True) as conn:
            tx = Tx(conn, model=model, message=message, detail=start_detail, actor=actor)
            tx._lock_scope()
            yield tx
            if not isinstance(tx.message, str):
                raise RegistryInvalid(f"tx.message must be a string, got {type(tx.message).__name__}")
            revision = q.finish_write(
                conn,
                model=model,
                action=action,
                actor=actor,
                outcome="ok",
                message=tx.message,
                detail=dict(check.json_object(tx.detail, "tx.detail")),
            )
        tx.revision = revision

    def record(
        self,
        *,
        actor: str,
        action: str,
        model: str | None,
        outcome: str,
        message: str,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append one history row on its own (typically a failed attempt: nothing else changes).

        Bumps the revision like any write, and returns the new one. ``model`` may name a model
        that does not exist (the attempt to create it may be what failed).
        """
        actor = check.short_text(actor, "actor", 128)
        action = check.short_text(action, "action", 64)
        if model is not None:
            model = check.short_text(model, "model", 128)
        if not isinstance(message, str):
            raise RegistryInvalid(f"message must be a string, got {type(message).__name__}")
        values = dict(check.json_object(detail if detail is not None else {}, "detail"))
        with self._connect(write=True) as conn:
            return q.finish_write(
                conn,
                model=model,
                action=action,
                actor=actor,
                outcome=check.outcome(outcome),
                message=message,
                detail=values,
            )

    def history(self, model: str | None = None, limit: int = 100) -> list[HistoryRecord]:
        """Up to ``limit`` (1-10000) history rows, newest first; only ``model``'s if given."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise RegistryInvalid(f"limit must be an integer from 1 to {MAX_HISTORY_LIMIT}, got {limit!r}")
        with self._connect() as conn:
            return q.read_history(conn, model, limit)

    # --- staged versions (gateway.registry.replicas): configuration, revisioned ------------------
    def unstage(self, model: str, version: int) -> bool:
        """Remove the staging of a version (a deploy that gave up); True if it was staged.

        When a row went, the revision is bumped and (PostgreSQL) the replicas notified, like any
        write, but no history row is appended: the deploy's own outcome is the history. Holds the
        model's lock like a transaction on it (``Tx``).
        """
        name = check.model_name(model)
        with self._connect(write=True) as conn:
            tx = Tx(conn, model=name, message="", detail={})
            tx._lock_scope()
            removed = tx.unstage_version(name, version)
            if removed:
                q.bump_revision(conn)
        return removed

    def staged(self, stack: str | None = None) -> list[StagedVersion]:
        """Every staged version (on ``stack`` only, if given), by model and version."""
        with self._connect() as conn:
            return r.staged(conn, stack)

    def desired(self, stack: str) -> dict[str, frozenset[int]]:
        """The versions ``stack``'s replicas should hold: every version available or staged on it."""
        with self._connect() as conn:
            return r.desired(conn, stack)

    def holdings(self, stack: str) -> tuple[dict[str, frozenset[int]], dict[str, frozenset[int]]]:
        """What ``stack``'s replicas should hold (``desired``) and, of that, what the stack serves
        (the available versions, not those only staged by a deploy in progress), read together."""
        with self._connect() as conn:
            return r.holdings(conn, stack)

    # --- backend replicas (gateway.registry.replicas): reports, neither audited nor revisioned ---

    def register_replica(self, replica_id: str, stack: str, address: str, host: str) -> None:
        """Add or renew a backend replica; its heartbeat is now."""
        with self._connect(write=True) as conn:
            r.register(conn, replica_id, stack, address, host)

    def heartbeat(self, replica_id: str) -> bool:
        """Mark a replica alive now; False if it is not registered."""
        with self._connect(write=True) as conn:
            return r.heartbeat(conn, replica_id)

    def report_version(self, replica_id: str, model: str, version: int, state: str, error: str = "") -> None:
        """Record a replica's state of one version: loading, ready, or failed with ``error``."""
        with self._connect(write=True) as conn:
            r.report(conn, replica_id, model, version, state, error)

    def forget_version(self, replica_id: str, model: str, version: int) -> None:
        """Remove a replica's report on a version it no longer holds."""
        with self._connect(write=True) as conn:
            r.forget(conn, replica_id, model, version)

    def deregister_replica(self, replica_id: str) -> bool:
        """Remove a replica and its reports (its agent is stopping); True if it was registered."""
        with self._connect(write=True) as conn:
            return r.deregister(conn, replica_id)

    def replicas(self, stack: str | None = None) -> list[ReplicaRecord]:
        """Every registered replica (of ``stack`` only, if given) with its version reports."""
        with self._connect() as conn:
            return r.read(conn, stack)
