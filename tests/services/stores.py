"""Test plugin: ``object_store``, every object-store backend in turn.

A test that takes ``object_store`` runs once per backend: ``filesystem``
(a fresh root under the test's tmp_path) and ``s3`` (a fresh bucket on the
session's SeaweedFS, with the 5 MiB minimum part size so multipart uploads
happen with small data; emptied and removed afterwards). The s3 case is
marked ``s3``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from vault.settings import S3StoreSettings
from vault.store import ObjectStore
from vault.store.filesystem import FilesystemObjectStore
from vault.store.s3 import S3ObjectStore

STORE_KINDS = ("filesystem", pytest.param("s3", marks=pytest.mark.s3))


def empty_and_remove_bucket(client: Minio, bucket: str) -> None:
    """Remove every object and incomplete upload of ``bucket``, then the bucket."""
    for upload in client._list_multipart_uploads(bucket).uploads:
        client._abort_multipart_upload(bucket, upload.object_name, upload.upload_id)
    for item in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, item.object_name)
    client.remove_bucket(bucket)


@pytest.fixture
def filesystem_store(tmp_path: Path) -> FilesystemObjectStore:
    """A filesystem store in a fresh directory."""
    return FilesystemObjectStore(tmp_path / "objects")


@pytest.fixture
def s3_store(seaweedfs_s3: S3StoreSettings, s3_admin: Minio) -> Iterator[S3ObjectStore]:
    """An S3 store on a fresh bucket of the session's SeaweedFS."""
    settings = seaweedfs_s3.model_copy(update={"bucket": f"test-{secrets.token_hex(6)}"})
    store = S3ObjectStore.from_settings(settings)
    try:
        yield store
    finally:
        empty_and_remove_bucket(s3_admin, store.bucket)


@pytest.fixture(params=STORE_KINDS)
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each object store backend in turn (see the module docstring)."""
    fixture = {"filesystem": "filesystem_store", "s3": "s3_store"}[request.param]
    return request.getfixturevalue(fixture)
