"""storage commitment: transactions and their pending reports

Revision ID: 0005c_commitments
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005c_commitments"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "commitment_transactions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("organisation_id", sa.String(length=32), nullable=False),
        sa.Column("transaction_digest", sa.String(length=64), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("references_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"], ["data_keys.id"], name=op.f("fk_commitment_transactions_key_id_data_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commitment_transactions")),
        sa.UniqueConstraint(
            "node_id",
            "transaction_digest",
            name=op.f("uq_commitment_transactions_node_id"),
        ),
    )
    with op.batch_alter_table("commitment_transactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_commitment_transactions_state"), ["state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_commitment_transactions_next_attempt_at"),
            ["next_attempt_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("commitment_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commitment_transactions_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_commitment_transactions_state"))
    op.drop_table("commitment_transactions")
