"""Study data keys: created, unwrapped on demand, re-wrapped, destroyed.

The keyring is the only code that moves DEKs between the key provider and the
catalog. A study gets one fresh DEK; its wrapped form lives in ``data_keys``:
wrapped under the provider's KEK, then sealed under the current generation
of its period key (the month it was made in; ``docs/KEYS.md`` and
:mod:`vault.key_periods`), with a copy of that form kept as its key envelope.
Destroying a key clears the wrapped bytes for good (crypto-shredding): every
object encrypted under it becomes unreadable, and opening it raises
:class:`~crypto.errors.KeyDestroyedError`, not an integrity error. Its
period is marked, and :meth:`Keyring.seal_periods` then replaces the period's
generation, so that copies of the wrapped key in old catalog backups die too.

Unwrapped handles are cached per process, but every :meth:`Keyring.data_key`
call checks the catalog first, so a key destroyed by another process is
refused here too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from threading import Lock

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.keys import DataKey, KeyProvider, WrappedKey
from vault.catalog.db import Catalog
from vault.catalog.key_periods import ENVELOPE_NAMESPACE, PendingDeletion, PeriodMember
from vault.catalog.models import DataKeyRecord
from vault.clock import Clock
from vault.errors import NotFound
from vault.key_periods import (
    PeriodRotation,
    RotationReport,
    Sealer,
    lock_period,
    period_of,
    sealed_under,
)
from vault.key_restore import RefreshReport, refresh_from_envelopes
from vault.store import ObjectStore


@dataclass(frozen=True)
class PendingKey:
    """A freshly generated DEK and its wrapped form, before it is recorded."""

    key: DataKey
    wrapped: WrappedKey
    period: str = ""


@dataclass(frozen=True)
class RewrapReport:
    rewrapped: int
    already_current: int
    destroyed: int


class Keyring:
    """Creates, opens, re-wraps and destroys data keys."""

    def __init__(
        self,
        catalog: Catalog,
        provider: KeyProvider,
        clock: Clock,
        *,
        cache_size: int = 256,
        envelopes: ObjectStore | None = None,
    ) -> None:
        self._catalog = catalog
        self._provider = provider
        self._clock = clock
        self._sealer = Sealer(provider, envelopes)
        self._periods = PeriodRotation(catalog, self._sealer, clock)
        self._cache: OrderedDict[str, DataKey] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    @property
    def provider(self) -> KeyProvider:
        return self._provider

    @property
    def envelopes(self) -> ObjectStore | None:
        """Where the key envelopes are kept (None: not kept, e.g. a bare test keyring)."""
        return self._sealer.envelopes

    def generate(self) -> PendingKey:
        """A new DEK, already wrapped and sealed, its envelope written; not yet recorded.

        The provider calls happen here, outside any catalog transaction.
        """
        key = DataKey.generate()
        period = period_of(self._clock.now())
        wrapped = self._sealer.wrap(key, self._periods.current_kek_id(period))
        self._sealer.keep_envelope(key.key_id, wrapped.kek_id, wrapped.blob)
        return PendingKey(key=key, wrapped=wrapped, period=period)

    def persist(self, session: Session, pending: PendingKey) -> None:
        """Record ``pending`` in ``session`` (committed with it).

        Holds the key's period row locked until the session ends; if the
        period got a new generation since :meth:`generate`, the key is
        sealed again under it first.

        Raises:
            KeyProviderError: the key's period was destroyed meanwhile (retry).
        """
        wrapped = pending.wrapped
        if pending.period:
            wrapped = self._joined(session, pending)
        session.add(
            DataKeyRecord(
                id=pending.key.key_id,
                kek_id=wrapped.kek_id,
                wrapped=wrapped.blob,
                created_at=self._clock.now(),
            )
        )
        if pending.period:
            session.flush()
            session.add(PeriodMember(key_id=pending.key.key_id, period=pending.period))
        self._remember(pending.key)

    def data_key(self, key_id: str, *, session: Session | None = None) -> DataKey:
        """The DEK named ``key_id``.

        Raises:
            KeyDestroyedError: the key was crypto-shredded.
            NotFound: no such key.
        """
        if session is None:
            with self._catalog.session() as own:
                return self.data_key(key_id, session=own)
        record = session.get(DataKeyRecord, key_id)
        if record is None:
            raise NotFound("no such data key")
        if record.destroyed_at is not None or record.wrapped is None or record.kek_id is None:
            self._forget(key_id)
            raise KeyDestroyedError("the data key was destroyed: this data was erased")
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is not None:
                self._cache.move_to_end(key_id)
                return cached
        key = self._sealer.unwrap(key_id, record.kek_id, record.wrapped)
        self._remember(key)
        return key

    def destroy(self, key_id: str, *, session: Session) -> None:
        """Crypto-shred: forget the wrapped DEK. Irreversible.

        Its period is marked for a new generation (:meth:`seal_periods`) and
        its envelope queued for deletion, both in ``session``.
        """
        record = session.get(DataKeyRecord, key_id)
        if record is None:
            raise NotFound("no such data key")
        if sealed_under(record.wrapped) is not None and self.envelopes is not None:
            session.add(PendingDeletion(namespace=ENVELOPE_NAMESPACE, object_key=key_id))
        self._periods.mark(session, key_id)
        record.wrapped = None
        record.kek_id = None
        record.destroyed_at = record.destroyed_at or self._clock.now()
        self._forget(key_id)

    def destroy_all(self, key_ids: Iterable[str], *, session: Session) -> None:
        """:meth:`destroy` each key, their periods locked in one order (no deadlock)."""
        wanted = set(key_ids)
        periods = dict(
            session.execute(
                select(PeriodMember.key_id, PeriodMember.period).where(
                    PeriodMember.key_id.in_(wanted)
                )
            ).all()
        )
        for key_id in sorted(wanted, key=lambda k: (periods.get(k, ""), k)):
            self.destroy(key_id, session=session)

    def seal_periods(self) -> RotationReport:
        """Give every period that lost a key a new generation; destroy the old ones.

        After this, no copy of a destroyed key's wrapped form (catalog
        backups included) can be opened. Idempotent; run after every
        shredding and daily.
        """
        return self._periods.run()

    def refresh_after_restore(self) -> RefreshReport:
        """Bring a restored catalog's wrapped keys to the present (:mod:`vault.key_restore`).

        Keys shredded after the backup was taken are recorded destroyed;
        the others take their current wrapped form from their envelopes.
        """
        with self._lock:
            self._cache.clear()
        return refresh_from_envelopes(self._catalog, self._sealer, self._clock)

    def rewrap_all(self) -> RewrapReport:
        """Re-wrap every live DEK under the provider's current KEK.

        No object is re-encrypted: only the small wrapped keys change. Keys
        from before period keys are sealed into the current period on the way.
        """
        current = self._provider.current_kek_id()
        counts = {"rewrapped": 0, "already_current": 0, "destroyed": 0}
        with self._catalog.session() as session:
            ids = list(session.scalars(select(DataKeyRecord.id).order_by(DataKeyRecord.id)))
        for key_id in ids:
            counts[self._rewrap_one(key_id, current)] += 1
        return RewrapReport(**counts)

    def _rewrap_one(self, key_id: str, current: str) -> str:
        with self._catalog.read_session() as session:
            member = session.get(PeriodMember, key_id)
            period = member.period if member else period_of(self._clock.now())
        self._periods.current_kek_id(period)  # the period's row exists before it is locked
        with self._catalog.session() as session:
            row = lock_period(session, period)
            record = session.get(DataKeyRecord, key_id)
            if record is None or record.wrapped is None or record.kek_id is None:
                return "destroyed"
            if record.kek_id == current and member is not None:
                return "already_current"
            if row is None or row.kek_id is None:
                raise KeyProviderError("the key's period was destroyed; it cannot be re-wrapped")
            key = self._sealer.unwrap(key_id, record.kek_id, record.wrapped)
            wrapped = self._sealer.wrap(key, row.kek_id)
            record.kek_id, record.wrapped = wrapped.kek_id, wrapped.blob
            record.rewrapped_at = self._clock.now()
            if member is None:
                session.add(PeriodMember(key_id=key_id, period=period))
            self._sealer.keep_envelope(key_id, wrapped.kek_id, wrapped.blob)
        return "rewrapped"

    def _joined(self, session: Session, pending: PendingKey) -> WrappedKey:
        """``pending``'s wrapped form, sealed under its period's current generation."""
        row = lock_period(session, pending.period)
        if row is None or row.kek_id is None:
            raise KeyProviderError("the key's period closed while it was made; retry")
        if sealed_under(pending.wrapped.blob) == row.kek_id:
            return pending.wrapped
        # From the key in hand: the generation it was sealed under may be gone already.
        wrapped = self._sealer.wrap(pending.key, row.kek_id)
        self._sealer.keep_envelope(wrapped.key_id, wrapped.kek_id, wrapped.blob)
        return wrapped

    def _remember(self, key: DataKey) -> None:
        with self._lock:
            self._cache[key.key_id] = key
            self._cache.move_to_end(key.key_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)
