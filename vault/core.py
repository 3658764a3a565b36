"""The vault's parts, built once from settings and passed to whoever needs them.

:func:`open_vault` connects the catalog, the object store and the key provider
and returns a :class:`Vault`. Entry points (API, C-STORE receiver, CLI,
workers) each open one and hand it down; there are no module globals.
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto.keys import KeyProvider
from crypto.providers import build_key_provider
from vault.audit import AuditLog
from vault.catalog.db import Catalog, open_catalog
from vault.catalog.index import INDEX_KEY_PURPOSE, UidIndex
from vault.clock import Clock, SystemClock
from vault.keyring import Keyring
from vault.settings import Settings
from vault.side_stores import ENVELOPES, side_store
from vault.store import ObjectStore, build_store


@dataclass(frozen=True)
class Vault:
    settings: Settings
    catalog: Catalog
    store: ObjectStore
    keyring: Keyring
    index: UidIndex
    audit: AuditLog
    clock: Clock

    def close(self) -> None:
        self.catalog.dispose()


def open_vault(
    settings: Settings,
    *,
    clock: Clock | None = None,
    provider: KeyProvider | None = None,
    store: ObjectStore | None = None,
) -> Vault:
    """Build the vault's parts from ``settings`` (parts given here win)."""
    clock = clock or SystemClock()
    catalog = open_catalog(settings.catalog.url or "", echo=settings.catalog.echo)
    provider = provider or build_key_provider(settings.keys)
    store = store or build_store(settings.store)
    return Vault(
        settings=settings,
        catalog=catalog,
        store=store,
        keyring=Keyring(catalog, provider, clock, envelopes=side_store(store, ENVELOPES)),
        index=UidIndex(provider.mac_key(INDEX_KEY_PURPOSE)),
        audit=AuditLog(catalog, clock),
        clock=clock,
    )
