"""Study data keys: created, unwrapped on demand, re-wrapped, destroyed.

The keyring is the only code that moves DEKs between the key provider and the
catalog. A study gets one fresh DEK; its wrapped form lives in ``data_keys``.
Destroying a key clears the wrapped bytes for good (crypto-shredding): every
object encrypted under it becomes unreadable, and opening it raises
:class:`~crypto.errors.KeyDestroyedError`, not an integrity error.

Unwrapped handles are cached per process, but every :meth:`Keyring.data_key`
call checks the catalog first, so a key destroyed by another process is
refused here too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto.errors import KeyDestroyedError
from crypto.keys import DataKey, KeyProvider, WrappedKey
from vault.catalog.db import Catalog
from vault.catalog.models import DataKeyRecord
from vault.clock import Clock
from vault.errors import NotFound


@dataclass(frozen=True)
class PendingKey:
    """A freshly generated DEK and its wrapped form, before it is recorded."""

    key: DataKey
    wrapped: WrappedKey


@dataclass(frozen=True)
class RewrapReport:
    rewrapped: int
    already_current: int
    destroyed: int


class Keyring:
    """Creates, opens, re-wraps and destroys data keys."""

    def __init__(
        self, catalog: Catalog, provider: KeyProvider, clock: Clock, *, cache_size: int = 256
    ) -> None:
        self._catalog = catalog
        self._provider = provider
        self._clock = clock
        self._cache: OrderedDict[str, DataKey] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    @property
    def provider(self) -> KeyProvider:
        return self._provider

    def generate(self) -> PendingKey:
        """A new DEK, already wrapped, not yet recorded (no catalog round trip).

        The provider call happens here, outside any catalog transaction.
        """
        key = DataKey.generate()
        return PendingKey(key=key, wrapped=self._provider.wrap(key))

    def persist(self, session: Session, pending: PendingKey) -> None:
        """Record ``pending`` in ``session`` (committed with it)."""
        session.add(
            DataKeyRecord(
                id=pending.key.key_id,
                kek_id=pending.wrapped.kek_id,
                wrapped=pending.wrapped.blob,
                created_at=self._clock.now(),
            )
        )
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
        key = self._provider.unwrap(WrappedKey(key_id, record.kek_id, record.wrapped))
        self._remember(key)
        return key

    def destroy(self, key_id: str, *, session: Session) -> None:
        """Crypto-shred: forget the wrapped DEK. Irreversible."""
        record = session.get(DataKeyRecord, key_id)
        if record is None:
            raise NotFound("no such data key")
        record.wrapped = None
        record.kek_id = None
        record.destroyed_at = record.destroyed_at or self._clock.now()
        self._forget(key_id)

    def rewrap_all(self) -> RewrapReport:
        """Re-wrap every live DEK under the provider's current KEK.

        No object is re-encrypted: only the small wrapped keys change.
        """
        current = self._provider.current_kek_id()
        counts = {"rewrapped": 0, "already_current": 0, "destroyed": 0}
        with self._catalog.session() as session:
            for record in session.scalars(select(DataKeyRecord)):
                counts[self._rewrap_one(record, current)] += 1
        return RewrapReport(**counts)

    def _rewrap_one(self, record: DataKeyRecord, current: str) -> str:
        if record.wrapped is None or record.kek_id is None:
            return "destroyed"
        if record.kek_id == current:
            return "already_current"
        key = self._provider.unwrap(WrappedKey(record.id, record.kek_id, record.wrapped))
        wrapped = self._provider.wrap(key)
        record.kek_id, record.wrapped = wrapped.kek_id, wrapped.blob
        record.rewrapped_at = self._clock.now()
        return "rewrapped"

    def _remember(self, key: DataKey) -> None:
        with self._lock:
            self._cache[key.key_id] = key
            self._cache.move_to_end(key.key_id)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)
