"""Backend replicas and what each reports about the versions it should hold.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the replica tables (empty: replicas register themselves)."""
    op.create_table(
        "registry_replicas",
        sa.Column("replica_id", sa.String(128), primary_key=True),
        sa.Column("stack", sa.String(32), nullable=False),
        sa.Column("address", sa.String(512), nullable=False),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS, nullable=False),
        sa.CheckConstraint("stack IN ('torchserve', 'tfserving')", name="ck_registry_replicas_stack"),
    )
    op.create_table(
        "registry_replica_versions",
        sa.Column(
            "replica_id",
            sa.String(128),
            sa.ForeignKey("registry_replicas.replica_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        # No foreign key to registry_versions: an agent reports on what it holds, even a version
        # whose record changed meanwhile; the rows go when the agent unloads the version.
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("version", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("state IN ('loading', 'ready', 'failed')", name="ck_registry_replica_versions_state"),
    )


def downgrade() -> None:
    """Drop the replica tables."""
    op.drop_table("registry_replica_versions")
    op.drop_table("registry_replicas")
