"""The catalog's data-subject request tables: requests, their studies, events, restrictions.

A :class:`DataSubjectRequest` is one request under GDPR articles 15 to 21,
tracked from receipt to its closing with its one-month deadline (extendable
by two). The identifiers the requester gave are kept only as keyed digests
(``subject_digests``, the same HMAC the catalog uses for patient ids), so the
request finds the person's studies without holding anything readable.

Free text the DPO writes (how identity was checked, why a deadline was
extended, the closing note) may unavoidably mention the person, so it is
sealed under the request's own data key (``key_id``), never stored in clear.

:class:`DsrStudy` links a request to the studies matched for it;
:class:`DsrEvent` is the request's chronology (each action, its outcome and a
PHI-free ground code); :class:`DsrRestriction` keeps a study away from
engineers while active. ``study_id`` columns are plain, not foreign keys:
they outlive an erased study. :func:`carries_subject` is the one rule by
which a study is the requester's: the search and the restriction of studies
that arrive later both use it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import BigInteger, ColumnElement, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy import UniqueConstraint as Unique
from sqlalchemy.orm import Mapped, mapped_column

from vault.catalog.models import Base, Study, UtcDateTime, new_id, utcnow

REQUEST_KINDS = ("access", "portability", "rectification", "restriction", "erasure", "objection")
REQUEST_STATES = ("received", "verified", "completed", "refused", "withdrawn")
OPEN_STATES = frozenset({"received", "verified"})
CLOSED_STATES = ("completed", "refused", "withdrawn")


class DataSubjectRequest(Base):
    """One data-subject request: kind, deadlines, identity check, state."""

    __tablename__ = "dsr_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="received")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    extended_months: Mapped[int] = mapped_column(Integer, default=0)
    extension_reason: Mapped[str | None] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    subject_digests: Mapped[str] = mapped_column(Text, default="[]")
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    verified_by: Mapped[str | None] = mapped_column(String(80))
    verification_method: Mapped[str | None] = mapped_column(String(40))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(80))


class DsrStudy(Base):
    """A study matched to a request by the identifiers the requester gave."""

    __tablename__ = "dsr_studies"
    __table_args__ = (Unique("request_id", "study_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(ForeignKey("dsr_requests.id"), index=True)
    study_id: Mapped[str] = mapped_column(String(32), index=True)
    matched_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class DsrEvent(Base):
    """One step in a request's chronology; ``note_sealed`` under the request's key."""

    __tablename__ = "dsr_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(ForeignKey("dsr_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(40), default="success")
    study_id: Mapped[str | None] = mapped_column(String(32))
    ground: Mapped[str | None] = mapped_column(String(80))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    note_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)


class DsrRestriction(Base):
    """A restriction of processing on one study: engineers lose it while active."""

    __tablename__ = "dsr_restrictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    request_id: Mapped[str] = mapped_column(ForeignKey("dsr_requests.id"), index=True)
    study_id: Mapped[str] = mapped_column(String(32), index=True)
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    placed_by: Mapped[str] = mapped_column(String(80))
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lifted_by: Mapped[str | None] = mapped_column(String(80))


def carries_subject(digests: Collection[str]) -> ColumnElement[bool]:
    """The SQL condition on ``Study``: it carries one of the subject's patient ``digests``."""
    return Study.patient_digest.in_(sorted(digests))
