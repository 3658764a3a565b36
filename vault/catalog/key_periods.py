"""The catalog's key-hierarchy tables: period keys, their members, queued deletions.

A :class:`KeyPeriod` is one period key (``docs/KEYS.md``): a calendar month
whose new data keys are sealed under it. ``kek_id`` names its current
generation in the key provider (None once the whole period was destroyed);
``needs_rotation`` says a data key sealed under the current generation was
destroyed since, so the generation must be replaced before old backups stop
being able to resurrect it; ``retire_pending`` says older generations (or,
once destroyed, all of them) may still be held by the provider.

:class:`PeriodMember` says which period a data key belongs to (the period key
id it is sealed under is inside its wrapped bytes). :class:`PendingDeletion`
is an object (a data object or a key envelope) that must be deleted because
its study was shredded: queued in the same transaction that destroyed the
keys, removed once the store confirmed, so a store outage never loses one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from vault.catalog.models import Base, UtcDateTime, new_id, utcnow

DATA_NAMESPACE = "data"
ENVELOPE_NAMESPACE = "envelope"


class KeyPeriod(Base):
    """One period key: its current generation and what is pending for it."""

    __tablename__ = "key_periods"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    kek_id: Mapped[str | None] = mapped_column(String(160))
    needs_rotation: Mapped[bool] = mapped_column(Boolean, default=False)
    retire_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    destroyed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PeriodMember(Base):
    """The period whose key seals data key ``key_id``."""

    __tablename__ = "key_period_members"

    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), index=True)


class PendingDeletion(Base):
    """An object of a shredded study (or a key envelope) still to delete from the store."""

    __tablename__ = "pending_deletions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    namespace: Mapped[str] = mapped_column(String(16))
    object_key: Mapped[str] = mapped_column(String(160))
    study_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # Erasure before expiry may bypass the store's GOVERNANCE retention; expiry never needs to.
    bypass_retention: Mapped[bool] = mapped_column(Boolean, default=False)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
