"""Stores beside the data objects: key envelopes and catalog backups.

Both live outside the catalog (that is their point: a catalog restored from
an old backup must be able to find the current key envelopes, and a backup
must survive the loss of the catalog) and outside the data objects' listing.
:func:`side_store` gives one for a name: on S3, a namespace of the same bucket
(``vault-meta/<name>/``, never under Object Lock retention); on the
filesystem, a sibling directory of the object root (``<root>-<name>``).
"""

from __future__ import annotations

from pathlib import Path

from vault.store import ObjectStore
from vault.store.filesystem import FilesystemObjectStore
from vault.store.s3 import S3ObjectStore

ENVELOPES = "key-envelopes"
BACKUPS = "backups"


def side_store(store: ObjectStore, name: str) -> ObjectStore:
    """The store named ``name`` beside the data store ``store``.

    Raises:
        TypeError: ``store`` is of a kind this module does not know.
    """
    if isinstance(store, S3ObjectStore):
        return store.namespace(name)
    if isinstance(store, FilesystemObjectStore):
        return FilesystemObjectStore(Path(f"{store.root}-{name}"))
    raise TypeError(f"no side store for a {type(store).__name__}")


def purge(store: ObjectStore, key: str) -> None:
    """Delete every copy of ``key`` (every version, where the store keeps versions)."""
    if isinstance(store, S3ObjectStore):
        store.purge(key)
    else:
        store.delete(key)
