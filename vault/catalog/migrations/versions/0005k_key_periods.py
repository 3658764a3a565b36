"""key hierarchy: period keys, their members, queued object deletions

Revision ID: 0005k_key_periods
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005k_key_periods"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_periods",
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("kek_id", sa.String(length=160), nullable=True),
        sa.Column("needs_rotation", sa.Boolean(), nullable=False),
        sa.Column("retire_pending", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("period", name=op.f("pk_key_periods")),
    )
    op.create_table(
        "key_period_members",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["data_keys.id"], name=op.f("fk_key_period_members_key_id_data_keys")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_key_period_members")),
    )
    with op.batch_alter_table("key_period_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_key_period_members_period"), ["period"], unique=False)
    op.create_table(
        "pending_deletions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("namespace", sa.String(length=16), nullable=False),
        sa.Column("object_key", sa.String(length=160), nullable=False),
        sa.Column("study_id", sa.String(length=32), nullable=True),
        sa.Column("bypass_retention", sa.Boolean(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_deletions")),
    )
    with op.batch_alter_table("pending_deletions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_deletions_study_id"), ["study_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("pending_deletions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_deletions_study_id"))
    op.drop_table("pending_deletions")
    with op.batch_alter_table("key_period_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_key_period_members_period"))
    op.drop_table("key_period_members")
    op.drop_table("key_periods")
