"""How minio and urllib3 failures become the vault's errors, for the S3 store's modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import urllib3
from minio.error import MinioException, S3Error

from vault.errors import NotFound, StorageUnavailable

MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})
NO_LOCK_CODE = "ObjectLockConfigurationNotFoundError"
TRANSPORT_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)


@contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Translate minio and urllib3 failures into the vault's errors."""
    try:
        yield
    except S3Error as exc:
        if exc.code in MISSING_CODES:
            raise NotFound("no such object") from exc
        raise StorageUnavailable(f"the object store refused to {action} ({exc.code})") from exc
    except TRANSPORT_ERRORS as exc:
        raise StorageUnavailable(f"the object store could not {action}") from exc
