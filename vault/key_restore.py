"""After a catalog restore: bring the restored wrapped keys up to the key hierarchy's present.

A catalog backup holds every data key as it was wrapped and sealed when the
backup was taken. Since then, periods may have been given new generations
(because keys of theirs were destroyed) and whole periods destroyed. So, for
the restored catalog (``docs/KEYS.md``):

1. each period's current generation is asked of the key provider; a period
   the provider no longer has is recorded destroyed;
2. each live data key of a period takes its wrapped form from its key
   envelope when the envelope is sealed under the period's current
   generation (the envelope is replaced at every re-seal, so it is the
   up-to-date copy);
3. a key whose envelope and restored form are both sealed under older
   generations is re-sealed under the current one if one of those
   generations still exists, and recorded destroyed if none does: it was
   shredded after the backup was taken, and stays so.

Keys from before period keys (no seal) are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto.errors import KeyDestroyedError
from vault.catalog.db import Catalog
from vault.catalog.key_periods import KeyPeriod, PeriodMember
from vault.catalog.models import DataKeyRecord
from vault.clock import Clock
from vault.key_envelopes import read_envelope
from vault.key_periods import Sealer, lock_period, sealed_under


@dataclass(frozen=True)
class RefreshReport:
    """What :func:`refresh_from_envelopes` changed in the restored catalog."""

    refreshed: int
    resealed: int
    destroyed: int
    unchanged: int
    periods_destroyed: int


def refresh_from_envelopes(catalog: Catalog, sealer: Sealer, clock: Clock) -> RefreshReport:
    """Bring every restored period and sealed data key to the present (module docstring)."""
    now = clock.now()
    periods_destroyed = _refresh_periods(catalog, sealer, now)
    counts = {"refreshed": 0, "resealed": 0, "destroyed": 0, "unchanged": 0}
    with catalog.read_session() as session:
        periods = list(session.scalars(select(KeyPeriod.period).order_by(KeyPeriod.period)))
    for period in periods:
        with catalog.session() as session:
            row = lock_period(session, period)
            current = row.kek_id if row is not None else None
            for record in _live_members(session, period):
                counts[_refresh_key(sealer, record, current, now)] += 1
    return RefreshReport(periods_destroyed=periods_destroyed, **counts)


def _refresh_periods(catalog: Catalog, sealer: Sealer, now: datetime) -> int:
    destroyed = 0
    with catalog.session() as session:
        for row in session.scalars(select(KeyPeriod)):
            current = sealer.provider.period_kek_id(row.period, create=False)
            if current is None and row.kek_id is not None:
                row.kek_id, row.destroyed_at = None, row.destroyed_at or now
                destroyed += 1
            elif current is not None:
                row.kek_id = current
                row.retire_pending = True
            row.needs_rotation = row.needs_rotation and current is not None
    return destroyed


def _live_members(session: Session, period: str) -> list[DataKeyRecord]:
    return list(
        session.scalars(
            select(DataKeyRecord)
            .join(PeriodMember, PeriodMember.key_id == DataKeyRecord.id)
            .where(PeriodMember.period == period, DataKeyRecord.wrapped.is_not(None))
        )
    )


def _refresh_key(sealer: Sealer, record: DataKeyRecord, current: str | None, now: datetime) -> str:
    """``refreshed``, ``resealed``, ``destroyed`` or ``unchanged``."""
    if current is None:
        return _destroyed(record, now)
    envelope = read_envelope(sealer.envelopes, record.id) if sealer.envelopes else None
    forms = [(envelope.kek_id, envelope.wrapped)] if envelope is not None else []
    forms.append((str(record.kek_id), record.wrapped or b""))
    for kek_id, wrapped in forms:
        if sealed_under(wrapped) == current:
            return _take(record, kek_id, wrapped, now)
    for kek_id, wrapped in forms:
        try:
            resealed = sealer.reseal(record.id, wrapped, current)
        except KeyDestroyedError:
            continue
        _take(record, kek_id, resealed, now)
        sealer.keep_envelope(record.id, kek_id, resealed)
        return "resealed"
    return _destroyed(record, now)


def _take(record: DataKeyRecord, kek_id: str, wrapped: bytes, now: datetime) -> str:
    if (record.kek_id, record.wrapped) == (kek_id, wrapped):
        return "unchanged"
    record.kek_id, record.wrapped, record.rewrapped_at = kek_id, wrapped, now
    return "refreshed"


def _destroyed(record: DataKeyRecord, now: datetime) -> str:
    record.wrapped, record.kek_id, record.destroyed_at = None, None, now
    return "destroyed"
