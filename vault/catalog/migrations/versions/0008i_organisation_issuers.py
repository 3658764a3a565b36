"""organisations: the Issuer of Patient ID values each one registers as its own

A patient's pseudonym and date offset are derived from (patient ID, domain);
an organisation's registered issuers (and no issuer) resolve to the
organisation's domain. The table starts empty: until an organisation
registers an issuer, its IDs without issuer are its own and every issuer is a
domain of its own.

Revision ID: 0008i_organisation_issuers
Revises: 0001
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008i_organisation_issuers"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organisation_issuers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organisation_id", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_organisation_issuers_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisation_issuers")),
        sa.UniqueConstraint("issuer", name=op.f("uq_organisation_issuers_issuer")),
    )
    with op.batch_alter_table("organisation_issuers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_organisation_issuers_organisation_id"),
            ["organisation_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("organisation_issuers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organisation_issuers_organisation_id"))
    op.drop_table("organisation_issuers")
