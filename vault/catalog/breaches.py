"""The catalog's breach register tables: incidents and their chronology.

A :class:`Breach` is one personal-data breach (GDPR article 33(5)): when it was
detected, its nature (confidentiality, integrity, availability), the
categories and approximate numbers of data subjects and records concerned,
and the notification decisions for the supervisory authority (72 hours) and
the data subjects. Codes and counts are kept in clear; the descriptions the
DPO writes (what happened, consequences, measures, lessons) are sealed under
the incident's own data key (``key_id``), because an incident description can
mention the people concerned; so is the reason given for each exemption from
notifying. ``investigation_started_at`` and ``authority_notified_at`` are the
times the DPO states; ``*_recorded_at`` when they were typed in, against which
the deadlines are measured (a backdated entry cannot hide a late one).

A :class:`BreachEntry` is one line of the incident's chronology (detection,
investigation, containment, notification, measure, note), its text sealed
under the same key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.catalog.models import Base, UtcDateTime, new_id, utcnow

NATURES = ("confidentiality", "integrity", "availability")
DATA_CATEGORIES = (
    "health-imaging",
    "patient-identifiers",
    "pseudonymised-data",
    "contact-details",
    "account-credentials",
    "access-log",
    "other",
)
SEALED_FIELDS = ("description", "cause", "consequences", "measures", "lessons")
# What must be on record before an incident is closed (article 33(5)).
REQUIRED_TO_CLOSE = ("cause", "consequences", "measures", "lessons")
EXEMPTION_REASON_FIELDS = ("authority_exemption_reason", "subjects_exemption_reason")
ENTRY_KINDS = (
    "detection",
    "investigation",
    "containment",
    "notification",
    "measure",
    "note",
)


class Breach(Base):
    """One incident in the breach register (see module docstring)."""

    __tablename__ = "breaches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="open")
    detected_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    occurred_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(80))
    nature: Mapped[str] = mapped_column(String(80))
    data_categories: Mapped[str] = mapped_column(String(200), default="")
    subjects_affected: Mapped[int | None] = mapped_column(Integer)
    records_affected: Mapped[int | None] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    description_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    consequences_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    measures_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    lessons_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    cause_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    investigation_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    investigation_recorded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    authority_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    authority_notified_recorded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    authority_reference: Mapped[str | None] = mapped_column(String(64))
    authority_exemption: Mapped[str | None] = mapped_column(String(40))
    authority_exemption_reason_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    subjects_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    subjects_exemption: Mapped[str | None] = mapped_column(String(40))
    subjects_exemption_reason_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(80))


class BreachEntry(Base):
    """One line of an incident's chronology; ``text_sealed`` under the incident's key."""

    __tablename__ = "breach_entries"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    breach_id: Mapped[str] = mapped_column(ForeignKey("breaches.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(20))
    text_sealed: Mapped[bytes] = mapped_column(LargeBinary)
