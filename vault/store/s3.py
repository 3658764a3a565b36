"""The S3 object store, through the ``minio`` SDK (MinIO, Ceph RGW, SeaweedFS, AWS).

A writer streams: it buffers up to ``part_size`` bytes in memory and sends
each full buffer as one part of a multipart upload, started when the first
part fills; an object smaller than one part goes in a single PUT on commit.
Commit completes the upload; abort, an exception in the ``with`` body or the
garbage collection of an uncommitted writer aborts it, so neither an object
nor an incomplete upload remains. Memory per writer stays about two parts
(the buffer and the copy being sent) whatever the object's size.

Why minio's low-level multipart calls (``_create_multipart_upload``,
``_upload_part``, ``_complete_multipart_upload``, ``_abort_multipart_upload``)
rather than ``put_object(length=-1)`` fed from a queue on a thread: the writer
stays single-threaded and synchronous, a failed part is seen by the
``write`` call that sent it, and abort is one call on an upload id we hold
instead of a thread to stop. The underscore methods are stable across minio
7.2 releases; their signatures are checked by this module's tests.

Errors: a missing key is :class:`NotFound`; every transport failure or S3
refusal is :class:`StorageUnavailable`. Object contents and keys are never
logged.

Namespaces: :meth:`S3ObjectStore.namespace` gives a store over the same bucket
whose keys live under ``vault-meta/<name>/`` (key envelopes, catalog backups);
the data store's :meth:`~S3ObjectStore.iter_keys` leaves them out.

Object Lock (a bucket created with it, ``store.s3.object_lock``): the data
store writes every object with a GOVERNANCE retention of ``object_lock_days``
from the time of writing (namespaces get none), mirrors legal holds
(:meth:`~S3ObjectStore.set_legal_hold`), and deletes for good with
:meth:`~S3ObjectStore.purge`, every version, bypassing governance only when
asked. A plain :meth:`~S3ObjectStore.delete` in such a bucket only hides the
object behind a delete marker: the locked version stays until its date.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from vault.errors import NotFound, StorageUnavailable
from vault.settings import S3StoreSettings
from vault.store._keys import checked_key
from vault.store._s3_errors import NO_LOCK_CODE, storage_errors
from vault.store._s3_lock import S3ObjectLock
from vault.store._s3_writer import S3ObjectWriter
from vault.store.base import new_object_key

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 16 * 1024 * 1024
READ_BUFFER_SIZE = 1024 * 1024
META_PREFIX = "vault-meta/"


class _ObjectResponse(io.RawIOBase):
    """A ``get_object`` response as a raw readable stream; close releases the connection."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        with storage_errors("read the object"):
            return self._response.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


class S3ObjectStore(S3ObjectLock):
    """Objects in one S3 bucket.

    Parameters
    ----------
    client:
        A configured ``minio.Minio`` client.
    bucket:
        The bucket holding the objects (see :meth:`ensure_bucket`).
    part_size:
        Bytes per multipart part, at least 5 MiB (the S3 minimum).
    lock_days:
        With Object Lock: days of GOVERNANCE retention given to each new data
        object from the time it is written; None writes without retention.
    """

    kind = "s3"

    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        lock_days: int | None = None,
        prefix: str = "",
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError("part_size must be at least 5 MiB")
        self._client = client
        self.bucket = bucket
        self.part_size = part_size
        self.lock_days = lock_days
        self._prefix = prefix

    @classmethod
    def from_settings(cls, settings: S3StoreSettings) -> S3ObjectStore:
        """A store for ``settings``, its bucket created if missing.

        Raises
        ------
        StorageUnavailable
            The S3 endpoint could not be reached or refused the credentials.
        """
        lock_days = settings.object_lock_days if settings.object_lock else None
        store = cls(
            minio_client(settings),
            settings.bucket,
            part_size=settings.part_size,
            lock_days=lock_days,
        )
        store.ensure_bucket(object_lock=settings.object_lock, region=settings.region)
        return store

    def namespace(self, name: str) -> S3ObjectStore:
        """A store over the same bucket for keys under ``vault-meta/<name>/`` (no retention)."""
        checked_key(name)
        return S3ObjectStore(
            self._client, self.bucket, part_size=self.part_size, prefix=f"{META_PREFIX}{name}/"
        )

    def ensure_bucket(self, *, object_lock: bool = False, region: str | None = None) -> None:
        """Create the bucket if it does not exist (with Object Lock if asked)."""
        with storage_errors("create the bucket"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=region, object_lock=object_lock)
            except S3Error as exc:
                if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    def supports_object_lock(self) -> bool:
        """Whether the bucket has S3 Object Lock enabled (retention, legal hold)."""
        try:
            with storage_errors("read the bucket's object lock configuration"):
                self._client.get_object_lock_config(self.bucket)
        except StorageUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code == NO_LOCK_CODE:
                return False
            raise
        return True

    def open_writer(self, key: str | None = None) -> S3ObjectWriter:
        """A writer for a new object under ``key`` (a fresh random key if None)."""
        key = new_object_key() if key is None else checked_key(key)
        lock_until = None
        if self.lock_days is not None and not self._prefix:
            lock_until = datetime.now(UTC) + timedelta(days=self.lock_days)
        return S3ObjectWriter(
            self._client,
            self.bucket,
            key,
            self.part_size,
            lock_until=lock_until,
            name=self._name(key),
        )

    def open_reader(self, key: str) -> BinaryIO:
        """The object as a buffered binary stream; closing it frees the connection."""
        with storage_errors("read the object"):
            response = self._client.get_object(self.bucket, self._name(key))
        return io.BufferedReader(_ObjectResponse(response), buffer_size=READ_BUFFER_SIZE)

    def size(self, key: str) -> int:
        """The object's length in bytes. Raises :class:`NotFound`."""
        with storage_errors("read the object's size"):
            stat = self._client.stat_object(self.bucket, self._name(key))
        return stat.size or 0

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error.

        In a bucket with versioning (Object Lock), this hides the object
        behind a delete marker; :meth:`purge` deletes every version.
        """
        try:
            with storage_errors("delete the object"):
                self._client.remove_object(self.bucket, self._name(key))
        except NotFound:
            return

    def iter_keys(self) -> Iterator[str]:
        """Every object key of this store (the data store leaves namespaces out)."""
        with storage_errors("list the objects"):
            listing = self._client.list_objects(
                self.bucket, prefix=self._prefix or None, recursive=True
            )
            for item in listing:
                name = item.object_name
                if item.is_dir or name is None:
                    continue
                if not self._prefix and name.startswith(META_PREFIX):
                    continue
                yield name[len(self._prefix) :]

    def _name(self, key: str) -> str:
        return self._prefix + checked_key(key)


def minio_client(settings: S3StoreSettings) -> Minio:
    """A minio client for ``settings``, with their timeouts and retries (not minio's 5 minutes)."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=settings.retries,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
        ),
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key.get_secret_value(),
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )
