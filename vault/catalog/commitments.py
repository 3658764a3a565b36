"""The catalog's storage-commitment transactions (PS3.4 Annex J) and their reports.

A :class:`CommitmentTransaction` is one Storage Commitment Request a PACS
node made, kept from the N-ACTION until its N-EVENT-REPORT was delivered or
given up, then remembered (without its references) for a while so that a
repeated Transaction UID is recognised.

Nothing in it is readable PHI. The Transaction UID is kept as a keyed digest
(``transaction_digest``, the catalog's HMAC), and so is the whole request
(``request_digest``: the Transaction UID with its sorted references), which
tells an identical repeat from a different request under the same UID. The
references themselves (SOP Class and Instance UIDs), which the report must
quote, are sealed under the transaction's own data key (``key_id``); the key
is destroyed and ``references_sealed`` cleared once the report was delivered
or given up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from vault.catalog.models import Base, UtcDateTime, new_id, utcnow

PENDING = "pending"
REPORTED = "reported"
GIVEN_UP = "given-up"
REPORT_STATES = (PENDING, REPORTED, GIVEN_UP)


class CommitmentTransaction(Base):
    """One commitment request of a PACS node and where its report stands."""

    __tablename__ = "commitment_transactions"
    __table_args__ = (UniqueConstraint("node_id", "transaction_digest"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Plain, not a foreign key: the row outlives nothing it must follow.
    node_id: Mapped[str] = mapped_column(String(32))
    organisation_id: Mapped[str] = mapped_column(String(32))
    transaction_digest: Mapped[str] = mapped_column(String(64))
    request_digest: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("data_keys.id"))
    references_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
