"""Period keys: sealing data keys per month, and replacing generations that must die.

The hierarchy (``docs/KEYS.md``): a DEK is wrapped under the provider's KEK,
then *sealed* under the current generation of its period key (the calendar
month it was created in). A :class:`Sealer` does the two steps and their
reverse, and keeps each live key's envelope (:mod:`vault.key_envelopes`) in
step with the catalog.

When a data key is destroyed, its period is marked ``needs_rotation``;
:meth:`PeriodRotation.run` then, for each such period, makes a new generation,
re-seals the period's surviving keys under it (only the small wrapped keys
change, never an object), rewrites their envelopes, commits, and destroys
every older generation in the provider. A past period with no live key left
is destroyed whole instead. From then on no copy of a destroyed key's wrapped
form, in the catalog, an envelope or an old backup, can be opened again.

Every change to a period (a new key joining it, a rotation) holds its
``key_periods`` row locked (``FOR UPDATE`` on PostgreSQL; SQLite serialises
writers), so a key being sealed under a generation can never be left behind
when that generation is retired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.keys import DataKey, KeyProvider, WrappedKey
from vault.catalog.db import Catalog
from vault.catalog.key_periods import KeyPeriod, PeriodMember
from vault.catalog.models import DataKeyRecord
from vault.clock import Clock
from vault.errors import StorageUnavailable
from vault.key_envelopes import (
    Envelope,
    pack_sealed,
    read_envelope,
    unpack_sealed,
    write_envelope,
)
from vault.store import ObjectStore

log = logging.getLogger(__name__)


def period_of(moment: datetime) -> str:
    """The key period (calendar month, UTC) a key made at ``moment`` belongs to."""
    return f"{moment:%Y-%m}"


def lock_period(session: Session, period: str) -> KeyPeriod | None:
    """The ``key_periods`` row of ``period``, locked until ``session`` ends."""
    query = (
        select(KeyPeriod)
        .where(KeyPeriod.period == period)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalar(query)


def sealed_under(wrapped: bytes | None) -> str | None:
    """The period key id a wrapped form is sealed under; None for a pre-period key."""
    if wrapped is None:
        return None
    sealed = unpack_sealed(wrapped)
    return sealed[0] if sealed else None


class Sealer:
    """Wraps and seals, opens and unwraps, re-seals; keeps envelopes in step."""

    def __init__(self, provider: KeyProvider, envelopes: ObjectStore | None) -> None:
        self.provider = provider
        self.envelopes = envelopes

    def wrap(self, key: DataKey, period_kek_id: str) -> WrappedKey:
        """``key`` wrapped under the current KEK and sealed under ``period_kek_id``."""
        inner = self.provider.wrap(key)
        seal = self.provider.seal(period_kek_id, key.key_id, inner.blob)
        return WrappedKey(key.key_id, inner.kek_id, pack_sealed(period_kek_id, seal))

    def unwrap(self, key_id: str, kek_id: str, wrapped: bytes) -> DataKey:
        """The DEK of a catalogued wrapped form (sealed, or from before period keys).

        Raises:
            KeyDestroyedError: its period key generation (or KEK) was destroyed.
            KeyProviderError: the wrapped form fails authentication.
        """
        return self.provider.unwrap(WrappedKey(key_id, kek_id, self._inner(key_id, wrapped)))

    def reseal(self, key_id: str, wrapped: bytes, period_kek_id: str) -> bytes:
        """The same wrapped DEK, sealed under ``period_kek_id`` instead."""
        seal = self.provider.seal(period_kek_id, key_id, self._inner(key_id, wrapped))
        return pack_sealed(period_kek_id, seal)

    def reseal_either(
        self, key_id: str, kek_id: str, wrapped: bytes, period_kek_id: str
    ) -> tuple[str, bytes]:
        """(KEK id, sealed form) of the key re-sealed under ``period_kek_id``.

        From the catalog's form (``kek_id``, ``wrapped``), or, if the provider
        refuses that one (a damaged row), from the key's envelope: the other
        copy of the same form.

        Raises:
            KeyDestroyedError: the catalog's form is sealed under a destroyed generation.
            KeyProviderError: neither copy could be re-sealed (the catalog form's error;
                the envelope never makes a key count as destroyed).
        """
        try:
            return kek_id, self.reseal(key_id, wrapped, period_kek_id)
        except KeyProviderError as refused:
            envelope = read_envelope(self.envelopes, key_id) if self.envelopes else None
            if envelope is None or (envelope.kek_id, envelope.wrapped) == (kek_id, wrapped):
                raise
            try:
                resealed = self.reseal(key_id, envelope.wrapped, period_kek_id)
            except (KeyProviderError, KeyDestroyedError):
                raise refused from None
        log.warning("a data key's catalog form was refused; re-sealed from its envelope")
        return envelope.kek_id, resealed

    def keep_envelope(self, key_id: str, kek_id: str, wrapped: bytes) -> None:
        """Write the envelope of a key whose wrapped form is now ``wrapped``."""
        if self.envelopes is not None:
            write_envelope(self.envelopes, Envelope(key_id, kek_id, wrapped))

    def _inner(self, key_id: str, wrapped: bytes) -> bytes:
        try:
            sealed = unpack_sealed(wrapped)
        except ValueError as exc:
            raise KeyProviderError("wrapped key is malformed") from exc
        if sealed is None:
            return wrapped
        return self.provider.unseal(sealed[0], key_id, sealed[1])


@dataclass(frozen=True)
class RotationReport:
    """What :meth:`PeriodRotation.run` did."""

    rotated: int
    destroyed: int
    resealed: int


class PeriodRotation:
    """Replaces period generations that sealed destroyed keys; destroys empty past periods."""

    def __init__(self, catalog: Catalog, sealer: Sealer, clock: Clock) -> None:
        self._catalog = catalog
        self._sealer = sealer
        self._clock = clock

    def current_kek_id(self, period: str) -> str:
        """The generation new keys of ``period`` are sealed under (the period made if new).

        Raises:
            KeyProviderError: the period was destroyed already.
        """
        with self._catalog.read_session() as session:
            row = session.get(KeyPeriod, period)
            if row is not None:
                if row.kek_id is None:
                    raise KeyProviderError("this key period was destroyed; no key joins it")
                return row.kek_id
        kek_id = self._sealer.provider.period_kek_id(period)
        if kek_id is None:
            raise KeyProviderError("this key period was destroyed; no key joins it")
        try:
            with self._catalog.session() as session:
                session.add(KeyPeriod(period=period, kek_id=kek_id, created_at=self._clock.now()))
        except IntegrityError:
            return self.current_kek_id(period)  # another process recorded it first
        return kek_id

    def mark(self, session: Session, key_id: str) -> None:
        """Data key ``key_id`` was destroyed: its period must get a new generation."""
        member = session.get(PeriodMember, key_id)
        if member is None:
            return
        row = lock_period(session, member.period)
        if row is not None and row.kek_id is not None:
            row.needs_rotation = True

    def run(self) -> RotationReport:
        """Rotate every period marked, destroy empty past ones, retire old generations.

        A period that cannot be sealed now does not hold back the others: its
        error is raised once every other period is done.
        """
        now = self._clock.now()
        self._mark_empty_past_periods(period_of(now))
        counts = {"rotated": 0, "destroyed": 0, "resealed": 0}
        with self._catalog.read_session() as session:
            due = list(
                session.scalars(
                    select(KeyPeriod.period)
                    .where(KeyPeriod.needs_rotation | KeyPeriod.retire_pending)
                    .order_by(KeyPeriod.period)
                )
            )
        failure: KeyProviderError | StorageUnavailable | None = None
        for period in due:
            try:
                outcome, resealed = self._rotate(period, now)
                self._retire(period)
            except (KeyProviderError, StorageUnavailable) as exc:
                log.warning("key period %s not sealed yet (%s)", period, exc.reason)
                failure = failure or exc
                continue
            counts[outcome] = counts.get(outcome, 0) + 1
            counts["resealed"] += resealed
        if failure is not None:
            raise failure
        return RotationReport(counts["rotated"], counts["destroyed"], counts["resealed"])

    def _rotate(self, period: str, now: datetime) -> tuple[str, int]:
        with self._catalog.session() as session:
            row = lock_period(session, period)
            if row is None or not row.needs_rotation or row.kek_id is None:
                return "retired", 0
            survivors = list(session.scalars(_live_members(period)))
            if not survivors and period < period_of(now):
                row.kek_id, row.destroyed_at = None, now
                outcome, resealed = "destroyed", 0
            else:
                new = self._sealer.provider.rotate_period(period)
                resealed = sum(self._reseal(record, new, now) for record in survivors)
                row.kek_id, row.rotated_at, outcome = new, now, "rotated"
            row.needs_rotation, row.retire_pending = False, True
        log.info("key period %s %s; %d keys re-sealed", period, outcome, resealed)
        return outcome, resealed

    def _reseal(self, record: DataKeyRecord, new: str, now: datetime) -> int:
        if record.wrapped is None or record.kek_id is None:
            return 0
        try:
            record.kek_id, record.wrapped = self._sealer.reseal_either(
                record.id, record.kek_id, record.wrapped, new
            )
        except KeyDestroyedError:
            log.warning("a data key of a rotated period was unreadable already; marked destroyed")
            record.wrapped, record.kek_id, record.destroyed_at = None, None, now
            return 0
        record.rewrapped_at = now
        self._sealer.keep_envelope(record.id, record.kek_id, record.wrapped)
        return 1

    def _retire(self, period: str) -> None:
        """Destroy, in the provider, every generation of ``period`` but the current one."""
        with self._catalog.read_session() as session:
            row = session.get(KeyPeriod, period)
            if row is None or not row.retire_pending:
                return
            keep = row.kek_id
        self._sealer.provider.retire_period(period, keep=keep)
        with self._catalog.session() as session:
            row = lock_period(session, period)
            if row is not None and row.kek_id == keep:
                row.retire_pending = False

    def _mark_empty_past_periods(self, current: str) -> None:
        with self._catalog.session() as session:
            active = session.scalars(
                select(KeyPeriod).where(
                    KeyPeriod.period < current,
                    KeyPeriod.kek_id.is_not(None),
                    ~KeyPeriod.needs_rotation,
                )
            )
            for row in list(active):
                if session.scalar(_live_members(row.period).limit(1)) is None:
                    row.needs_rotation = True


def _live_members(period: str) -> Select[tuple[DataKeyRecord]]:
    return (
        select(DataKeyRecord)
        .join(PeriodMember, PeriodMember.key_id == DataKeyRecord.id)
        .where(PeriodMember.period == period, DataKeyRecord.wrapped.is_not(None))
        .order_by(DataKeyRecord.id)
    )
