"""The vault's parts, built once from settings and passed to whoever needs them.

:func:`open_vault` connects the catalog, the object store and the key provider
and returns a :class:`Vault`. Entry points (API, C-STORE receiver, CLI,
workers) each open one and hand it down; there are no module globals.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from crypto.errors import KeyProviderError
from crypto.keys import KeyProvider
from crypto.providers import build_key_provider
from vault.audit import AuditLog
from vault.catalog.db import Catalog, open_catalog
from vault.catalog.index import INDEX_KEY_PURPOSE, UidIndex
from vault.catalog.models import DataKeyRecord
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
    """Build the vault's parts from ``settings`` (parts given here win).

    A catalog that holds data keys never gets a new key hierarchy: a missing
    local key file, or no KEK under the configured PKCS#11 token and prefix or
    Transit key name, is refused (``KeyProviderError``) rather than replaced.
    """
    clock = clock or SystemClock()
    catalog = open_catalog(settings.catalog.url or "", echo=settings.catalog.echo)
    try:
        provider = provider or build_key_provider(settings.keys, create=not _holds_keys(catalog))
    except KeyProviderError:
        catalog.dispose()
        raise
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


def _holds_keys(catalog: Catalog) -> bool:
    """Whether any data key was ever recorded (so keys were wrapped under the provider)."""
    with catalog.read_session() as session:
        return session.scalar(select(DataKeyRecord.id).limit(1)) is not None
