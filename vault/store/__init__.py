"""The object store front door: :func:`build_store` and the store interface.

Objects are opaque, already encrypted bytes under random keys. Pick the
backend with ``StoreSettings.kind``: ``filesystem`` (embedded default, one
file per object) or ``s3`` (any S3 service, through the minio SDK).
"""

from __future__ import annotations

from vault.settings import StoreSettings
from vault.store.base import ObjectStore, ObjectWriter, new_object_key
from vault.store.filesystem import FilesystemObjectStore
from vault.store.s3 import S3ObjectStore

__all__ = ["ObjectStore", "ObjectWriter", "build_store", "new_object_key"]


def build_store(settings: StoreSettings) -> ObjectStore:
    """The object store ``settings`` describe, ready for use.

    For ``s3`` the bucket is created if missing.

    Raises
    ------
    ValueError
        ``filesystem`` without a root directory.
    vault.errors.StorageUnavailable
        ``s3`` and the endpoint cannot be reached or refuses the credentials.
    """
    if settings.kind == "s3":
        return S3ObjectStore.from_settings(settings.s3)
    if settings.filesystem.root is None:
        raise ValueError("the filesystem object store needs a root directory")
    return FilesystemObjectStore(settings.filesystem.root)
