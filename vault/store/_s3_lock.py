"""S3 Object Lock on the S3 store: purging every version, legal holds, retention dates.

In a bucket created with Object Lock (versioning on), a plain delete only
hides an object behind a delete marker; :meth:`S3ObjectLock.purge` deletes
every version, bypassing GOVERNANCE retention only when asked (S3 itself
never lets anything through a legal hold). :func:`lock_headers` are what a
write sends to give the new object its GOVERNANCE retention.
:class:`S3ObjectLock` is mixed into :class:`~vault.store.s3.S3ObjectStore`,
whose client, bucket and key naming it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from vault.errors import StorageUnavailable
from vault.store._s3_errors import NO_LOCK_CODE, storage_errors

NO_RETENTION_CODES = frozenset(
    {NO_LOCK_CODE, "NoSuchObjectLockConfiguration", "NoSuchObjectLegalHold"}
)


class S3ObjectLock:
    """The Object Lock methods of :class:`~vault.store.s3.S3ObjectStore`.

    The host provides the minio ``_client``, the ``bucket`` and ``_name()``
    (an object key as named in the bucket).
    """

    _client: Minio
    bucket: str
    _name: Callable[[str], str]

    def purge(self, key: str, *, bypass_governance: bool = False) -> None:
        """Delete every version of the object (and its delete markers); none is no error.

        Raises
        ------
        StorageUnavailable
            The store refused a version: a legal hold is on, or its retention
            is in force and ``bypass_governance`` was not given (or not allowed
            to these credentials). Versions already deleted stay deleted.
        """
        name = self._name(key)
        with storage_errors("list the object's versions"):
            versions = [
                DeleteObject(name, item.version_id)
                for item in self._client.list_objects(
                    self.bucket, prefix=name, include_version=True
                )
                if item.object_name == name
            ]
        if not versions:
            return
        with storage_errors("delete the object"):
            errors = list(
                self._client.remove_objects(
                    self.bucket, versions, bypass_governance_mode=bypass_governance
                )
            )
        if errors:
            raise StorageUnavailable(f"the object store refused to delete ({errors[0].code})")

    def set_legal_hold(self, key: str, on: bool) -> None:
        """Place (``on``) or lift the S3 legal hold on the object's current version."""
        with storage_errors("change the object's legal hold"):
            if on:
                self._client.enable_object_legal_hold(self.bucket, self._name(key))
            else:
                self._client.disable_object_legal_hold(self.bucket, self._name(key))

    def legal_hold(self, key: str) -> bool:
        """Whether an S3 legal hold is on the object's current version."""
        try:
            with storage_errors("read the object's legal hold"):
                return self._client.is_object_legal_hold_enabled(self.bucket, self._name(key))
        except StorageUnavailable as exc:
            if _no_retention(exc):
                return False
            raise

    def retained_until(self, key: str) -> datetime | None:
        """The end of the object's retention (current version), None if it has none."""
        try:
            with storage_errors("read the object's retention"):
                retention = self._client.get_object_retention(self.bucket, self._name(key))
        except StorageUnavailable as exc:
            if _no_retention(exc):
                return None
            raise
        return retention.retain_until_date if retention is not None else None


def _no_retention(exc: StorageUnavailable) -> bool:
    cause = exc.__cause__
    return isinstance(cause, S3Error) and cause.code in NO_RETENTION_CODES


def lock_headers(until: datetime | None) -> dict[str, str]:
    if until is None:
        return {}
    return {
        "x-amz-object-lock-mode": GOVERNANCE,
        "x-amz-object-lock-retain-until-date": until.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
