"""breaches: the cause, the reasons for an exemption, and when dates were recorded

Article 33(5) asks the register for the facts, effects and remedial action;
the mission for "cause, chronology, responses, lessons". A cause (sealed,
like the other texts) and, for each exemption from notifying, its reason
(sealed) are added. Deadlines are measured against when the investigation
start and the authority's notification were typed in, not only the time the
DPO gives: existing incidents take the first investigation entry's
recording time; their notification's recording time is unknown (left empty,
the stated time stands in).

Revision ID: 0007b_breach_cause
Revises: 0005b_breaches
Create Date: 2027-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007b_breach_cause"
down_revision = "0005b_breaches"
branch_labels = None
depends_on = None

_SEALED = ("cause_sealed", "authority_exemption_reason_sealed", "subjects_exemption_reason_sealed")
_RECORDED = ("investigation_recorded_at", "authority_notified_recorded_at")


def upgrade() -> None:
    with op.batch_alter_table("breaches", schema=None) as batch_op:
        for name in _SEALED:
            batch_op.add_column(sa.Column(name, sa.LargeBinary(), nullable=True))
        for name in _RECORDED:
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE breaches SET investigation_recorded_at = (SELECT MIN(breach_entries.recorded_at)"
        " FROM breach_entries WHERE breach_entries.breach_id = breaches.id"
        " AND breach_entries.kind = 'investigation')"
    )


def downgrade() -> None:
    with op.batch_alter_table("breaches", schema=None) as batch_op:
        for name in (*_SEALED, *_RECORDED):
            batch_op.drop_column(name)
