"""The catalog's de-identification tables: pseudonymised studies and instances.

A :class:`PseudonymisedStudy` is the engineers' copy of one original study,
encrypted under a data key of its own, with its progress (``state``) and a
PHI-free ``reason`` when it failed. Each :class:`PseudonymisedInstance` is one
original instance's fate: a stored pseudonymised object (``done``) or held
back with a reason code (``quarantined``, nothing stored).

Only pseudonymised values are kept in clear: the keyed pseudonym and the
keyed ``2.25.`` UIDs the engine made. No original UID, name or identifier is
stored here; originals are reached through their internal ids.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from vault.catalog.models import Base, UtcDateTime, new_id, utcnow

STUDY_STATES = ("queued", "running", "done", "quarantined", "failed")
FINAL_STATES = frozenset({"done", "quarantined"})
INSTANCE_STATES = ("done", "quarantined")


class PseudonymisedStudy(Base):
    """The pseudonymised copy of one original study and its progress."""

    __tablename__ = "pseudonymised_studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.id"), unique=True)
    pseudonym: Mapped[str | None] = mapped_column(String(64), index=True)
    pseudo_study_uid: Mapped[str | None] = mapped_column(String(64))
    data_key_id: Mapped[str | None] = mapped_column(ForeignKey("data_keys.id"))
    state: Mapped[str] = mapped_column(String(20), default="queued")
    reason: Mapped[str | None] = mapped_column(String(80))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    quarantined_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PseudonymisedInstance(Base):
    """One original instance in the pseudonymised copy: stored, or held back."""

    __tablename__ = "pseudonymised_instances"
    __table_args__ = (UniqueConstraint("pseudo_study_id", "source_instance_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    pseudo_study_id: Mapped[str] = mapped_column(ForeignKey("pseudonymised_studies.id"), index=True)
    source_instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    pseudo_series_uid: Mapped[str | None] = mapped_column(String(64))
    pseudo_sop_uid: Mapped[str | None] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("data_keys.id"))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
