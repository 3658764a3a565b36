"""breach register: incidents and their chronology

Revision ID: 0005b_breaches
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005b_breaches"
down_revision = "0001"
branch_labels = None
depends_on = None


def _when(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "breaches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        _when("detected_at", nullable=False),
        _when("occurred_at"),
        _when("recorded_at", nullable=False),
        sa.Column("recorded_by", sa.String(length=80), nullable=False),
        sa.Column("nature", sa.String(length=80), nullable=False),
        sa.Column("data_categories", sa.String(length=200), nullable=False),
        sa.Column("subjects_affected", sa.Integer(), nullable=True),
        sa.Column("records_affected", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("description_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("consequences_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("measures_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("lessons_sealed", sa.LargeBinary(), nullable=True),
        _when("investigation_started_at"),
        _when("authority_notified_at"),
        sa.Column("authority_reference", sa.String(length=64), nullable=True),
        sa.Column("authority_exemption", sa.String(length=40), nullable=True),
        _when("subjects_notified_at"),
        sa.Column("subjects_exemption", sa.String(length=40), nullable=True),
        _when("closed_at"),
        sa.Column("closed_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"], ["data_keys.id"], name=op.f("fk_breaches_key_id_data_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breaches")),
        sa.UniqueConstraint("reference", name=op.f("uq_breaches_reference")),
    )
    with op.batch_alter_table("breaches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_breaches_detected_at"), ["detected_at"], unique=False)

    op.create_table(
        "breach_entries",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("breach_id", sa.String(length=32), nullable=False),
        _when("at", nullable=False),
        _when("recorded_at", nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("text_sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["breach_id"], ["breaches.id"], name=op.f("fk_breach_entries_breach_id_breaches")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_breach_entries")),
    )
    with op.batch_alter_table("breach_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_breach_entries_breach_id"), ["breach_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("breach_entries")
    op.drop_table("breaches")
