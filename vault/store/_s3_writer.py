"""The S3 store's writer: one object streamed part by part, committed or aborted whole.

See :mod:`vault.store.s3` for why minio's low-level multipart calls are used.
With a ``lock_until`` the object is written with a GOVERNANCE retention to
that date (the PUT's, or the multipart upload's, Object Lock headers).
"""

from __future__ import annotations

import io
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.datatypes import Part
from minio.retention import Retention

from vault.errors import NotFound, StorageUnavailable
from vault.store._s3_errors import TRANSPORT_ERRORS, storage_errors
from vault.store._s3_lock import lock_headers
from vault.store._writer_state import ABORTED, COMMITTED, OPEN, WriterLifecycle

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/octet-stream"


def _abort_upload(client: Minio, bucket: str, key: str, upload_id: str) -> None:
    """Abort a multipart upload, best effort (also run by the garbage collector)."""
    try:
        client._abort_multipart_upload(bucket, key, upload_id)
    except TRANSPORT_ERRORS as exc:
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
    except TRANSPORT_ERRORS as exc:
        log.warning("could not remove an object after a failed commit (%s)", type(exc).__name__)


class S3ObjectWriter(WriterLifecycle):
    """Streams one object to S3, part by part."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        key: str,
        part_size: int,
        *,
        lock_until: datetime | None = None,
        name: str | None = None,
    ) -> None:
        self.key = key
        self._name = name or key
        self._client = client
        self._bucket = bucket
        self._part_size = part_size
        self._lock_until = lock_until
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._finalizer: weakref.finalize | None = None
        self._commit_sent = False
        self._state = OPEN

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
                    self._bucket, self._name, self._upload_id, self._parts
                )
        self._state = COMMITTED
        self._buffer = bytearray()
        if self._finalizer is not None:
            self._finalizer.detach()

    def abort(self) -> None:
        """Abort the upload and drop the buffer. Does nothing once committed or aborted."""
        if self._state != OPEN:
            return
        self._state = ABORTED
        self._buffer = bytearray()
        if self._finalizer is not None:
            self._finalizer()
        if self._commit_sent:
            _remove_object(self._client, self._bucket, self._name)

    def _put_whole(self) -> None:
        length = len(self._buffer)
        data = io.BytesIO(self._buffer)
        retention = Retention(GOVERNANCE, self._lock_until) if self._lock_until else None
        # part_size above the length makes minio send one PUT (no threaded multipart).
        self._client.put_object(
            self._bucket,
            self._name,
            data,
            length,
            content_type=CONTENT_TYPE,
            part_size=self._part_size,
            retention=retention,
        )

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._start_upload()
        number = len(self._parts) + 1
        etag = self._client._upload_part(
            self._bucket, self._name, bytes(self._buffer), None, self._upload_id, number
        )
        self._parts.append(Part(number, etag))
        self._buffer = bytearray()

    def _start_upload(self) -> None:
        headers = {"Content-Type": CONTENT_TYPE, **lock_headers(self._lock_until)}
        upload_id = self._client._create_multipart_upload(self._bucket, self._name, headers)
        self._upload_id = upload_id
        self._finalizer = weakref.finalize(
            self, _abort_upload, self._client, self._bucket, self._name, upload_id
        )

    @contextmanager
    def _aborting_on_failure(self, action: str) -> Iterator[None]:
        try:
            with storage_errors(action):
                yield
        except (StorageUnavailable, NotFound):
            self.abort()
            raise
