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
"""

from __future__ import annotations

import io
import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import BinaryIO, Self

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.error import MinioException, S3Error

from vault.errors import NotFound, StorageUnavailable
from vault.settings import S3StoreSettings
from vault.store._keys import checked_key
from vault.store.base import new_object_key

log = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024
DEFAULT_PART_SIZE = 16 * 1024 * 1024
READ_BUFFER_SIZE = 1024 * 1024
CONTENT_TYPE = "application/octet-stream"
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})
_NO_LOCK_CODE = "ObjectLockConfigurationNotFoundError"
_TRANSPORT_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)
_OPEN, _COMMITTED, _ABORTED = "open", "committed", "aborted"


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Translate minio and urllib3 failures into the vault's errors."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING_CODES:
            raise NotFound("no such object") from exc
        raise StorageUnavailable(f"the object store refused to {action} ({exc.code})") from exc
    except _TRANSPORT_ERRORS as exc:
        raise StorageUnavailable(f"the object store could not {action}") from exc


def _abort_upload(client: Minio, bucket: str, key: str, upload_id: str) -> None:
    """Abort a multipart upload, best effort (also run by the garbage collector)."""
    try:
        client._abort_multipart_upload(bucket, key, upload_id)
    except _TRANSPORT_ERRORS as exc:
        log.warning(
            "could not abort incomplete multipart upload %s (%s); a bucket lifecycle "
            "rule AbortIncompleteMultipartUpload removes such leftovers",
            upload_id,
            type(exc).__name__,
        )


def _remove_object(client: Minio, bucket: str, key: str) -> None:
    """Remove an object whose commit may or may not have landed, best effort."""
    try:
        client.remove_object(bucket, key)
    except _TRANSPORT_ERRORS as exc:
        log.warning("could not remove an object after a failed commit (%s)", type(exc).__name__)


class S3ObjectWriter:
    """Streams one object to S3, part by part."""

    def __init__(self, client: Minio, bucket: str, key: str, part_size: int) -> None:
        self.key = key
        self._client = client
        self._bucket = bucket
        self._part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._finalizer: weakref.finalize | None = None
        self._commit_sent = False
        self._state = _OPEN

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``, sending every part that fills; returns its length.

        Raises
        ------
        ValueError
            The writer was already committed or aborted.
        StorageUnavailable
            A part could not be sent; the upload is aborted.
        """
        self._require_open()
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            room = self._part_size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) == self._part_size:
                with self._aborting_on_failure("store a part"):
                    self._send_part()
        return total

    def commit(self) -> None:
        """Send what is buffered and make the object visible.

        Raises
        ------
        StorageUnavailable
            The store did not take the object; nothing is left behind.
        """
        self._require_open()
        with self._aborting_on_failure("store the object"):
            self._commit_sent = True
            if self._upload_id is None:
                self._put_whole()
            else:
                if self._buffer:
                    self._send_part()
                self._client._complete_multipart_upload(
                    self._bucket, self.key, self._upload_id, self._parts
                )
        self._state = _COMMITTED
        self._buffer = bytearray()
        if self._finalizer is not None:
            self._finalizer.detach()

    def abort(self) -> None:
        """Abort the upload and drop the buffer. Does nothing once committed or aborted."""
        if self._state != _OPEN:
            return
        self._state = _ABORTED
        self._buffer = bytearray()
        if self._finalizer is not None:
            self._finalizer()
        if self._commit_sent:
            _remove_object(self._client, self._bucket, self.key)

    def _put_whole(self) -> None:
        length = len(self._buffer)
        data = io.BytesIO(self._buffer)
        # part_size above the length makes minio send one PUT (no threaded multipart).
        self._client.put_object(
            self._bucket,
            self.key,
            data,
            length,
            content_type=CONTENT_TYPE,
            part_size=self._part_size,
        )

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._start_upload()
        number = len(self._parts) + 1
        etag = self._client._upload_part(
            self._bucket, self.key, bytes(self._buffer), None, self._upload_id, number
        )
        self._parts.append(Part(number, etag))
        self._buffer = bytearray()

    def _start_upload(self) -> None:
        headers = {"Content-Type": CONTENT_TYPE}
        upload_id = self._client._create_multipart_upload(self._bucket, self.key, headers)
        self._upload_id = upload_id
        self._finalizer = weakref.finalize(
            self, _abort_upload, self._client, self._bucket, self.key, upload_id
        )

    @contextmanager
    def _aborting_on_failure(self, action: str) -> Iterator[None]:
        try:
            with _storage_errors(action):
                yield
        except (StorageUnavailable, NotFound):
            self.abort()
            raise

    def _require_open(self) -> None:
        if self._state != _OPEN:
            raise ValueError(f"object writer already {self._state}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == _OPEN:
            self.commit()


class _ObjectResponse(io.RawIOBase):
    """A ``get_object`` response as a raw readable stream; close releases the connection."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        with _storage_errors("read the object"):
            return self._response.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()


class S3ObjectStore:
    """Objects in one S3 bucket.

    Parameters
    ----------
    client:
        A configured ``minio.Minio`` client.
    bucket:
        The bucket holding the objects (see :meth:`ensure_bucket`).
    part_size:
        Bytes per multipart part, at least 5 MiB (the S3 minimum).
    """

    kind = "s3"

    def __init__(self, client: Minio, bucket: str, *, part_size: int = DEFAULT_PART_SIZE) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError("part_size must be at least 5 MiB")
        self._client = client
        self.bucket = bucket
        self.part_size = part_size

    @classmethod
    def from_settings(cls, settings: S3StoreSettings) -> S3ObjectStore:
        """A store for ``settings``, its bucket created if missing.

        Raises
        ------
        StorageUnavailable
            The S3 endpoint could not be reached or refused the credentials.
        """
        store = cls(minio_client(settings), settings.bucket, part_size=settings.part_size)
        store.ensure_bucket(object_lock=settings.object_lock, region=settings.region)
        return store

    def ensure_bucket(self, *, object_lock: bool = False, region: str | None = None) -> None:
        """Create the bucket if it does not exist (with Object Lock if asked)."""
        with _storage_errors("create the bucket"):
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
            with _storage_errors("read the bucket's object lock configuration"):
                self._client.get_object_lock_config(self.bucket)
        except StorageUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code == _NO_LOCK_CODE:
                return False
            raise
        return True

    def open_writer(self, key: str | None = None) -> S3ObjectWriter:
        """A writer for a new object under ``key`` (a fresh random key if None)."""
        key = new_object_key() if key is None else checked_key(key)
        return S3ObjectWriter(self._client, self.bucket, key, self.part_size)

    def open_reader(self, key: str) -> BinaryIO:
        """The object as a buffered binary stream; closing it frees the connection."""
        with _storage_errors("read the object"):
            response = self._client.get_object(self.bucket, checked_key(key))
        return io.BufferedReader(_ObjectResponse(response), buffer_size=READ_BUFFER_SIZE)

    def size(self, key: str) -> int:
        """The object's length in bytes. Raises :class:`NotFound`."""
        with _storage_errors("read the object's size"):
            stat = self._client.stat_object(self.bucket, checked_key(key))
        return stat.size or 0

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        try:
            with _storage_errors("delete the object"):
                self._client.remove_object(self.bucket, checked_key(key))
        except NotFound:
            return

    def iter_keys(self) -> Iterator[str]:
        """Every object key in the bucket."""
        with _storage_errors("list the objects"):
            for item in self._client.list_objects(self.bucket, recursive=True):
                if not item.is_dir and item.object_name is not None:
                    yield item.object_name


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
