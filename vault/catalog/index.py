"""Keyed digests that stand in the catalog for identifying values.

Original UIDs and patient identifiers never enter the catalog in clear. The
catalog keeps ``HMAC-SHA256(index key, kind || 0x00 || value)`` instead: the
same value always gives the same digest, so exact-match look-ups work (a
resend, a storage-commitment request, a data-subject search), but a digest
cannot be read back, and without the key held by the key provider it cannot be
confirmed by guessing either.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from crypto.keys import MacKey
from vault.mac_purposes import CATALOG_INDEX

IndexKind = Literal["study", "series", "instance", "patient", "transaction", "commitment-request"]

INDEX_KEY_PURPOSE = CATALOG_INDEX


class UidIndex:
    """Computes the catalog's keyed digests with one MAC key handle."""

    def __init__(self, mac_key: MacKey, *, cache_size: int = 4096) -> None:
        self._mac_key = mac_key
        self._cached = lru_cache(maxsize=cache_size)(self._compute)

    def digest(self, kind: IndexKind, value: str) -> str:
        """The hex digest standing for ``value`` of the given kind."""
        return self._cached(kind, value)

    def _compute(self, kind: str, value: str) -> str:
        return self._mac_key.mac(kind.encode() + b"\x00" + value.encode()).hex()
