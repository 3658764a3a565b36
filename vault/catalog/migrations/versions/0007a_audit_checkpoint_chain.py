"""audit: checkpoints numbered and chained (each MAC covers the previous checkpoint's)

Existing checkpoints are numbered in the order they were written (by time,
then by the record they pin: a purge wrote its ``purge`` checkpoint before
the ``periodic`` one of its own record) and keep ``prev_mac`` NULL: their MAC
was made over the earlier message, which did not name a predecessor.

Revision ID: 0007a_audit_checkpoint_chain
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007a_audit_checkpoint_chain"
down_revision = "0004"
branch_labels = None
depends_on = None

_NUMBER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number", _NUMBER, nullable=True))
        batch_op.add_column(sa.Column("prev_mac", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id FROM audit_checkpoints ORDER BY at, seq, id")).all()
    for number, (checkpoint_id,) in enumerate(rows, start=1):
        bind.execute(
            sa.text("UPDATE audit_checkpoints SET number = :n WHERE id = :id"),
            {"n": number, "id": checkpoint_id},
        )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.alter_column("number", existing_type=_NUMBER, nullable=False)
        batch_op.create_index(batch_op.f("ix_audit_checkpoints_number"), ["number"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_number"))
        batch_op.drop_column("prev_mac")
        batch_op.drop_column("number")
