"""uploads: a running total of the files' declared lengths

Admission used to add up every file of the upload for each new file, which
made an upload of n files cost O(n^2) reads. Existing uploads get their total
from their files.

Revision ID: 0006u_upload_declared_bytes
Revises: 0005u_uploads
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006u_upload_declared_bytes"
down_revision = "0005u_uploads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("declared_bytes", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.execute(
        "UPDATE uploads SET declared_bytes = (SELECT COALESCE(SUM(upload_files.length), 0)"
        " FROM upload_files WHERE upload_files.upload_id = uploads.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_column("declared_bytes")
