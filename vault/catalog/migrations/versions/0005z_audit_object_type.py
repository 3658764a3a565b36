"""audit: room for longer object kinds ("pseudonymised-instance")

Revision ID: 0005z_audit_object_type
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005z_audit_object_type"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce VARCHAR lengths; PostgreSQL does.
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "audit_events",
        "object_type",
        type_=sa.String(length=40),
        existing_type=sa.String(length=20),
        existing_nullable=True,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "audit_events",
        "object_type",
        type_=sa.String(length=20),
        existing_type=sa.String(length=40),
        existing_nullable=True,
    )
