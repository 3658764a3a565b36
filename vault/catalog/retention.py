"""The catalog's retention tables: legal holds, tombstones, access-log checkpoints.

A :class:`LegalHold` keeps a case or a study from expiring while it is active
(``lifted_at`` empty). A :class:`Tombstone` is what is left of an expired
study: its internal id, dates and a reason code, nothing that identifies a
patient. An :class:`AuditCheckpoint` is a keyed MAC over one access-log
record's sequence number and hash: the ``purge`` kind marks where the chain
starts after older records were purged, the ``periodic`` kind pins the chain
so that cutting records off its tail is detected. Checkpoints are numbered
and each MAC also covers the previous checkpoint's MAC (``prev_mac``; empty
for the first, NULL for checkpoints written before they were chained), so
that removing one is detected too.

``LegalHold.study_id`` and ``Tombstone.study_id`` are plain columns, not
foreign keys: they outlive the study row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.catalog.models import Base, UtcDateTime, new_id, utcnow

CHECKPOINT_KINDS = ("purge", "periodic")


class LegalHold(Base):
    """A legal hold on a case or a study: held data never expires until lifted."""

    __tablename__ = "legal_holds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), index=True)
    study_id: Mapped[str | None] = mapped_column(String(32), index=True)
    reason_code: Mapped[str] = mapped_column(String(40))
    placed_by: Mapped[str] = mapped_column(String(80))
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lifted_by: Mapped[str | None] = mapped_column(String(80))


class Tombstone(Base):
    """What remains of a study erased at expiry: ids, dates, a reason; no PHI."""

    __tablename__ = "tombstones"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    study_id: Mapped[str] = mapped_column(String(32), unique=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expired_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(String(40))


class AuditCheckpoint(Base):
    """A keyed MAC pinning access-log record ``seq`` to its ``hash``, chained to the one before."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    number: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    prev_mac: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), index=True)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    mac_key_id: Mapped[str] = mapped_column(String(128))
    mac: Mapped[str] = mapped_column(String(64))
