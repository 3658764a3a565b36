"""data-subject requests: requests, matched studies, events, restrictions

Revision ID: 0005d_dsr
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005d_dsr"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _request_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["request_id"], ["dsr_requests.id"], name=op.f(f"fk_{table}_request_id_dsr_requests")
    )


def _index(table: str, *columns: str, unique: bool = False) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=unique)


def upgrade() -> None:
    op.create_table(
        "dsr_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("extended_months", sa.Integer(), nullable=False),
        sa.Column("extension_reason", sa.String(length=40), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("subject_digests", sa.Text(), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_by", sa.String(length=80), nullable=True),
        sa.Column("verification_method", sa.String(length=40), nullable=True),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"], ["data_keys.id"], name=op.f("fk_dsr_requests_key_id_data_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsr_requests")),
        sa.UniqueConstraint("reference", name=op.f("uq_dsr_requests_reference")),
    )
    _index("dsr_requests", "due_at")

    op.create_table(
        "dsr_studies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
        _request_fk("dsr_studies"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsr_studies")),
        sa.UniqueConstraint("request_id", "study_id", name=op.f("uq_dsr_studies_request_id")),
    )
    _index("dsr_studies", "request_id", "study_id")

    op.create_table(
        "dsr_events",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("study_id", sa.String(length=32), nullable=True),
        sa.Column("ground", sa.String(length=80), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("note_sealed", sa.LargeBinary(), nullable=True),
        _request_fk("dsr_events"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_dsr_events")),
    )
    _index("dsr_events", "request_id")

    op.create_table(
        "dsr_restrictions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("placed_by", sa.String(length=80), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=80), nullable=True),
        _request_fk("dsr_restrictions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dsr_restrictions")),
    )
    _index("dsr_restrictions", "request_id", "study_id")


def downgrade() -> None:
    for table in ("dsr_restrictions", "dsr_events", "dsr_studies", "dsr_requests"):
        op.drop_table(table)
