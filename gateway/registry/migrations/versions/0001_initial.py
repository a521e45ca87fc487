"""The registry's first schema: models, versions, labels, policies, history and the revision.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Timestamps are written timezone-aware UTC by gateway.registry.schema.UTCDateTime.
_TS = sa.DateTime(timezone=True)
# Versions are 64-bit: TF Serving versions are often epoch seconds or longer timestamps.
_VERSION = sa.BigInteger()


def upgrade() -> None:
    """Create every table and the single meta row at revision 0."""
    op.create_table(
        "registry_models",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "registry_versions",
        sa.Column("model", sa.String(128), sa.ForeignKey("registry_models.name"), primary_key=True),
        sa.Column("version", _VERSION, primary_key=True, autoincrement=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("artifact", sa.String(1024), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("backend IN ('torchserve', 'tfserving')", name="ck_registry_versions_backend"),
        sa.CheckConstraint("state IN ('available', 'retired')", name="ck_registry_versions_state"),
        sa.CheckConstraint("version >= 1", name="ck_registry_versions_positive"),
    )
    op.create_table(
        "registry_labels",
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", _VERSION, nullable=False),
        sa.ForeignKeyConstraint(
            ["model", "version"],
            ["registry_versions.model", "registry_versions.version"],
            name="fk_registry_labels_version",
        ),
    )
    op.create_table(
        "registry_policies",
        sa.Column("model", sa.String(128), sa.ForeignKey("registry_models.name"), primary_key=True),
        sa.Column("canary_version", _VERSION, nullable=True),
        sa.Column("canary_percent", sa.Float(), nullable=False),
        sa.Column("sticky_header", sa.String(128), nullable=True),
        sa.Column("shadow_version", _VERSION, nullable=True),
        sa.Column("shadow_percent", sa.Float(), nullable=False),
        sa.Column("stable_history", sa.JSON(), nullable=False),
        sa.Column("guard", sa.JSON(), nullable=True),
        sa.CheckConstraint("canary_percent >= 0 AND canary_percent <= 100", name="ck_registry_policies_canary"),
        sa.CheckConstraint("shadow_percent >= 0 AND shadow_percent <= 100", name="ck_registry_policies_shadow"),
    )
    op.create_table(
        "registry_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", _TS, nullable=False),
        # No foreign key: failed attempts on models that do not exist are recorded too.
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.CheckConstraint("outcome IN ('ok', 'failed')", name="ck_registry_history_outcome"),
    )
    op.create_index("ix_registry_history_model_id", "registry_history", ["model", "id"])
    meta = op.create_table(
        "registry_meta",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_registry_meta_one_row"),
    )
    op.bulk_insert(meta, [{"id": 1, "revision": 0}])


def downgrade() -> None:
    """Drop everything the upgrade created (the history is lost)."""
    op.drop_table("registry_meta")
    op.drop_index("ix_registry_history_model_id", table_name="registry_history")
    op.drop_table("registry_history")
    op.drop_table("registry_policies")
    op.drop_table("registry_labels")
    op.drop_table("registry_versions")
    op.drop_table("registry_models")
