"""deidentified: pseudonymised studies and instances

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pseudonymised_studies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=True),
        sa.Column("pseudo_study_uid", sa.String(length=64), nullable=True),
        sa.Column("data_key_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=80), nullable=True),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("quarantined_count", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["data_key_id"],
            ["data_keys.id"],
            name=op.f("fk_pseudonymised_studies_data_key_id_data_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_pseudonymised_studies_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pseudonymised_studies")),
        sa.UniqueConstraint("study_id", name=op.f("uq_pseudonymised_studies_study_id")),
    )
    with op.batch_alter_table("pseudonymised_studies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pseudonymised_studies_pseudonym"), ["pseudonym"], unique=False
        )

    op.create_table(
        "pseudonymised_instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pseudo_study_id", sa.String(length=32), nullable=False),
        sa.Column("source_instance_id", sa.String(length=32), nullable=False),
        sa.Column("pseudo_series_uid", sa.String(length=64), nullable=True),
        sa.Column("pseudo_sop_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["data_keys.id"], name=op.f("fk_pseudonymised_instances_key_id_data_keys")
        ),
        sa.ForeignKeyConstraint(
            ["pseudo_study_id"],
            ["pseudonymised_studies.id"],
            name=op.f("fk_pseudonymised_instances_pseudo_study_id_pseudonymised_studies"),
        ),
        sa.ForeignKeyConstraint(
            ["source_instance_id"],
            ["instances.id"],
            name=op.f("fk_pseudonymised_instances_source_instance_id_instances"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pseudonymised_instances")),
        sa.UniqueConstraint("object_key", name=op.f("uq_pseudonymised_instances_object_key")),
        sa.UniqueConstraint(
            "pseudo_study_id",
            "source_instance_id",
            name=op.f("uq_pseudonymised_instances_pseudo_study_id"),
        ),
    )
    with op.batch_alter_table("pseudonymised_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pseudonymised_instances_pseudo_study_id"),
            ["pseudo_study_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_pseudonymised_instances_source_instance_id"),
            ["source_instance_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("pseudonymised_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pseudonymised_instances_source_instance_id"))
        batch_op.drop_index(batch_op.f("ix_pseudonymised_instances_pseudo_study_id"))

    op.drop_table("pseudonymised_instances")
    with op.batch_alter_table("pseudonymised_studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pseudonymised_studies_pseudonym"))

    op.drop_table("pseudonymised_studies")
