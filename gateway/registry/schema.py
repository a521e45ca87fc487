"""The registry's tables, as SQLAlchemy Core objects (the schema itself is created by Alembic).

Keep these definitions and the migrations in ``migrations/versions`` in step: the migrations
are what builds the database, these are what the queries are written against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

VERSION_TABLE = "registry_alembic_version"
"""Alembic's bookkeeping table; its own name so the registry can share a database."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out timezone-aware UTC on every backend.

    SQLite has no time zones, so values are stored there as naive UTC and marked UTC on the way
    out; PostgreSQL stores ``timestamptz`` and hands back the session's zone, turned into UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("registry timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


metadata = MetaData()

models = Table(
    "registry_models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

versions = Table(
    "registry_versions",
    metadata,
    Column("model", String(128), ForeignKey("registry_models.name"), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("backend", String(32), nullable=False),
    Column("artifact", String(1024), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

labels = Table(
    "registry_labels",
    metadata,
    Column("model", String(128), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    ForeignKeyConstraint(["model", "version"], ["registry_versions.model", "registry_versions.version"]),
)

policies = Table(
    "registry_policies",
    metadata,
    Column("model", String(128), ForeignKey("registry_models.name"), primary_key=True),
    Column("canary_version", BigInteger, nullable=True),
    Column("canary_percent", Float, nullable=False),
    Column("sticky_header", String(128), nullable=True),
    Column("shadow_version", BigInteger, nullable=True),
    Column("shadow_percent", Float, nullable=False),
    Column("stable_history", JSON, nullable=False),
    # none_as_null: a policy without a guard is SQL NULL, not the JSON text 'null'.
    Column("guard", JSON(none_as_null=True), nullable=True),
    # How many of the stack's replicas must report a version ready before it is routed; NULL:
    # all current replicas, at least one (migration 0003).
    Column("min_ready", Integer, nullable=True),
)

history = Table(
    "registry_history",
    metadata,
    # SQLite only autoincrements an INTEGER PRIMARY KEY, PostgreSQL gets a 64-bit identity.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("model", String(128), nullable=True),
    Column("action", String(64), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_registry_history_model_id", "model", "id"),
)

meta = Table(
    "registry_meta",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

replicas = Table(
    "registry_replicas",
    metadata,
    Column("replica_id", String(128), primary_key=True),
    Column("stack", String(32), nullable=False),
    Column("address", String(512), nullable=False),
    Column("host", String(256), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)

replica_versions = Table(
    "registry_replica_versions",
    metadata,
    Column("replica_id", String(128), ForeignKey("registry_replicas.replica_id", ondelete="CASCADE"), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("error", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

staged = Table(
    "registry_staged",
    metadata,
    # No foreign key to registry_versions: a staged version has no version row until it is routed.
    Column("model", String(128), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("backend", String(32), nullable=False),
    Column("staged_at", UTCDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
)
