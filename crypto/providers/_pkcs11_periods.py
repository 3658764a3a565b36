"""Period keys in a PKCS#11 token (``docs/KEYS.md``).

Period keys are AES-256 keys generated in the token like the KEKs (private,
sensitive, never extractable), one per generation, labelled
``<prefix>-period-YYYY-MM-gN`` (ids ``pkcs11:`` + label); the current
generation is the highest present. A seal is ``CKM_AES_GCM`` inside the
token, bound to the DEK ``key_id`` and the period key id. A generation the
token does not hold is reported destroyed: period keys are only ever made by
the vault and only leave the token by destruction. :class:`Pkcs11PeriodKeys`
is mixed into :class:`~crypto.providers.pkcs11.Pkcs11KeyProvider`, whose
session and label prefix it uses.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.mechanisms import GCMParams

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.providers import _pkcs11_token as token
from crypto.providers._binding import (
    NONCE_BYTES,
    check_period,
    pack_sealed,
    seal_associated_data,
    unpack_sealed,
)

logger = logging.getLogger(__name__)


def period_id_pattern(prefix: str) -> re.Pattern[str]:
    """The ids of the period keys of the deployment whose labels start with ``prefix``."""
    return re.compile(
        "pkcs11:"
        + re.escape(prefix)
        + r"-period-(?P<period>[0-9]{4}-[0-9]{2})-g(?P<generation>[1-9][0-9]{0,8})"
    )


class Pkcs11PeriodKeys:
    """The period-key methods of :class:`~crypto.providers.pkcs11.Pkcs11KeyProvider`.

    The host provides ``name``, the label ``_prefix``, ``_period_id_pattern``,
    ``_session_in_use()`` and ``_find_one()``.
    """

    name: str
    _prefix: str
    _period_id_pattern: re.Pattern[str]
    _session_in_use: Callable[[], AbstractContextManager[pkcs11.Session]]
    _find_one: Callable[[pkcs11.Session, str, KeyType], pkcs11.SecretKey | None]

    def period_kek_id(self, period: str, *, create: bool = True) -> str | None:
        """The highest generation of period key ``period`` in the token (made if ``create``)."""
        check_period(period)
        with self._session_in_use() as session:
            generations = self._generations(session, period)
            if generations:
                return self._period_id(period, max(generations))
            if not create:
                return None
            token.get_or_create(session, self._period_label(period, 1), token.kek_template())
        return self._period_id(period, 1)

    def rotate_period(self, period: str) -> str:
        """Generate the next generation of period key ``period`` in the token."""
        check_period(period)
        with self._session_in_use() as session:
            generation = max(self._generations(session, period), default=0) + 1
            label = self._period_label(period, generation)
            while token.create_new(session, label, token.kek_template()) is None:
                generation += 1
                label = self._period_label(period, generation)
        kek_id = self._period_id(period, generation)
        logger.info("pkcs11 key provider made %s", kek_id)
        return kek_id

    def seal(self, kek_id: str, key_id: str, wrapped: bytes) -> bytes:
        """Seal wrapped DEK ``key_id`` with AES-GCM inside the token under ``kek_id``."""
        nonce = os.urandom(NONCE_BYTES)
        aad = seal_associated_data(provider=self.name, kek_id=kek_id, key_id=key_id)
        with self._session_in_use() as session:
            key = self._period_key(session, kek_id)
            sealed = key.encrypt(
                wrapped, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        return pack_sealed(nonce, bytes(sealed))

    def unseal(self, kek_id: str, key_id: str, sealed: bytes) -> bytes:
        """Open a seal inside the token; KeyDestroyedError if the generation is gone."""
        nonce, ciphertext = unpack_sealed(sealed)
        aad = seal_associated_data(provider=self.name, kek_id=kek_id, key_id=key_id)
        with self._session_in_use() as session:
            key = self._period_key(session, kek_id)
            try:
                opened = key.decrypt(
                    ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                )
            except pkcs11.PKCS11Error as exc:
                raise KeyProviderError("sealed key failed authentication") from exc
        return bytes(opened)

    def retire_period(self, period: str, *, keep: str | None) -> None:
        """Destroy every generation of ``period`` in the token but ``keep``; idempotent."""
        check_period(period)
        if keep is not None and self.period_of(keep) != period:
            raise KeyProviderError("the KEK id does not name a generation of this period")
        with self._session_in_use() as session:
            for generation, key in self._generations(session, period).items():
                if self._period_id(period, generation) != keep:
                    key.destroy()
        logger.info("pkcs11 key provider retired period %s keeping %s", period, keep or "none")

    def period_of(self, kek_id: str) -> str | None:
        """The period of one of this deployment's period-key ids; None for any other id."""
        match = self._period_id_pattern.fullmatch(kek_id)
        return match.group("period") if match else None

    def _period_key(self, session: pkcs11.Session, kek_id: str) -> pkcs11.SecretKey:
        match = self._period_id_pattern.fullmatch(kek_id)
        if match is None:
            raise KeyProviderError("the KEK id does not name a period key of this deployment")
        label = self._period_label(match.group("period"), int(match.group("generation")))
        key = self._find_one(session, label, KeyType.AES)
        if key is None:
            raise KeyDestroyedError("the period key that sealed this key was destroyed")
        return key

    def _generations(self, session: pkcs11.Session, period: str) -> dict[int, pkcs11.SecretKey]:
        """The generations of period key ``period`` in the token (uncontested labels only)."""
        pattern = re.compile(
            re.escape(f"{self._prefix}-period-{period}") + r"-g(?P<generation>[1-9][0-9]{0,8})"
        )
        found: dict[int, list[pkcs11.SecretKey]] = {}
        for key in token.secret_keys(session, KeyType.AES):
            match = pattern.fullmatch(key[Attribute.LABEL])
            if match is not None:
                found.setdefault(int(match.group("generation")), []).append(key)
        return {generation: keys[0] for generation, keys in found.items() if len(keys) == 1}

    def _period_label(self, period: str, generation: int) -> str:
        return f"{self._prefix}-period-{period}-g{generation}"

    def _period_id(self, period: str, generation: int) -> str:
        return f"pkcs11:{self._period_label(period, generation)}"
