"""Staged versions (what agents load before a deploy routes them) and a per-model min_ready.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the staged versions' table (empty) and add the nullable ``min_ready`` to policies."""
    op.create_table(
        "registry_staged",
        # No foreign key to registry_versions: the version row only exists once the deploy routes it.
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("version", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("staged_at", _TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.CheckConstraint("backend IN ('torchserve', 'tfserving')", name="ck_registry_staged_backend"),
        sa.CheckConstraint("version >= 1", name="ck_registry_staged_positive"),
    )
    # NULL: the default (all current replicas of the stack, at least one). A nullable column
    # without a default is a plain ALTER TABLE ADD COLUMN on SQLite too.
    op.add_column("registry_policies", sa.Column("min_ready", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop the staged versions and ``min_ready``."""
    with op.batch_alter_table("registry_policies") as batch:
        batch.drop_column("min_ready")
    op.drop_table("registry_staged")
