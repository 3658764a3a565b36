"""Period keys in the local key file (``docs/KEYS.md``).

Period keys are 256-bit keys in the provider's key file, one entry per month
with its generations (format in :mod:`._keyfile`), ids
``kek-local-period-YYYY-MM-gN``. A seal is AES-256-GCM with a random nonce
and associated data binding the DEK ``key_id`` and the period key id (layout
in :mod:`._binding`). A generation at or below the period's highest that the
file no longer holds was destroyed. :class:`LocalPeriodKeys` is mixed into
:class:`~crypto.providers.local.LocalKeyProvider`, whose key file, lock and
state it uses.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.providers import _keyfile
from crypto.providers._binding import (
    NONCE_BYTES,
    check_period,
    pack_sealed,
    seal_associated_data,
    unpack_sealed,
)

logger = logging.getLogger(__name__)

_PERIOD_KEK_ID = re.compile(
    r"kek-local-period-(?P<period>[0-9]{4}-[0-9]{2})-g(?P<generation>[1-9][0-9]{0,8})"
)


class LocalPeriodKeys:
    """The period-key methods of :class:`~crypto.providers.local.LocalKeyProvider`.

    The host provides ``name``, the key file's ``_path`` and ``_lock``, and
    ``_state()`` / ``_reload()`` (the file's content, re-read when replaced).
    """

    name: str
    _path: Path
    _lock: threading.Lock

    def period_kek_id(self, period: str, *, create: bool = True) -> str | None:
        """The current generation of period key ``period``, made on first use if ``create``."""
        check_period(period)
        keys = self._state().periods.get(period)
        if keys is None and create:
            return self._change_period(period, lambda c: c.with_period_generation(period))
        if keys is None or keys.current not in keys.keys:
            return None
        return _period_kek_id(period, keys.current)

    def rotate_period(self, period: str) -> str:
        """Make generation N+1 of period key ``period`` current and return its id."""
        check_period(period)
        kek_id = self._change_period(period, lambda c: c.with_period_generation(period))
        logger.info("local key provider made %s", kek_id)
        return kek_id

    def seal(self, kek_id: str, key_id: str, wrapped: bytes) -> bytes:
        """Seal wrapped DEK ``key_id`` with AES-256-GCM under period generation ``kek_id``."""
        key = self._period_key(kek_id)
        nonce = os.urandom(NONCE_BYTES)
        aad = seal_associated_data(provider=self.name, kek_id=kek_id, key_id=key_id)
        return pack_sealed(nonce, AESGCM(key).encrypt(nonce, wrapped, aad))

    def unseal(self, kek_id: str, key_id: str, sealed: bytes) -> bytes:
        """Open a seal made by :meth:`seal`.

        Raises
        ------
        KeyDestroyedError
            That generation of the period key was destroyed.
        KeyProviderError
            The id is not a period key of this file, or the seal fails
            authentication (tampered, or moved onto another key id).
        """
        key = self._period_key(kek_id)
        nonce, ciphertext = unpack_sealed(sealed)
        aad = seal_associated_data(provider=self.name, kek_id=kek_id, key_id=key_id)
        try:
            return AESGCM(key).decrypt(nonce, ciphertext, aad)
        except InvalidTag as exc:
            raise KeyProviderError("sealed key failed authentication") from exc

    def retire_period(self, period: str, *, keep: str | None) -> None:
        """Destroy every generation of ``period`` but ``keep`` (all if None); idempotent."""
        check_period(period)
        generation = None if keep is None else self._parse_period_id(keep, period)
        self._change_period(period, lambda c: c.retiring_period(period, generation))
        logger.info("local key provider retired period %s keeping %s", period, keep or "none")

    def period_of(self, kek_id: str) -> str | None:
        """The period of a ``kek-local-period-...`` id; None for any other id."""
        match = _PERIOD_KEK_ID.fullmatch(kek_id)
        return match.group("period") if match else None

    def _change_period(
        self, period: str, change: Callable[[_keyfile.KeyFile], _keyfile.KeyFile]
    ) -> str:
        """Apply ``change`` to the key file under the writer lock; the period's current id."""
        with self._lock, _keyfile.writer_lock(self._path):
            content, _ = _keyfile.read_key_file(self._path)
            changed = change(content)
            _keyfile.write_key_file(self._path, changed)
            self._reload()
        keys = changed.periods.get(period)
        return _period_kek_id(period, keys.current if keys else 0)

    def _parse_period_id(self, kek_id: str, period: str | None = None) -> int:
        match = _PERIOD_KEK_ID.fullmatch(kek_id)
        if match is None or (period is not None and match.group("period") != period):
            raise KeyProviderError("the KEK id does not name a local period key")
        return int(match.group("generation"))

    def _period_key(self, kek_id: str) -> bytes:
        generation = self._parse_period_id(kek_id)
        period = self.period_of(kek_id) or ""
        keys = self._state().periods.get(period)
        if keys is not None and generation in keys.keys:
            return keys.keys[generation]
        if keys is not None and generation <= keys.current:
            raise KeyDestroyedError("the period key that sealed this key was destroyed")
        raise KeyProviderError("the KEK id names a period key this key file never had")


def _period_kek_id(period: str, generation: int) -> str:
    return f"kek-local-period-{period}-g{generation}"
