"""The encrypting side: a writable file object that emits the encrypted stream.

Plaintext is cut into segments of ``SEGMENT_BYTES``; a segment is sealed and
written as soon as the stream knows it is not the last one (that is, once
one more byte arrives), and the last segment is sealed by :meth:`close`.
Large writes are sealed straight from the caller's buffer; only the tail of a
write is copied into the stream's one-segment buffer.
"""

from __future__ import annotations

import io
from enum import Enum
from types import TracebackType
from typing import NoReturn, Protocol

from crypto._segment import (
    CIPHERTEXT_SEGMENT_BYTES,
    MAX_SEGMENTS,
    SEGMENT_BYTES,
    TAG_BYTES,
    Buffer,
    SegmentCipher,
)
from crypto.errors import CryptoError


class Writable(Protocol):
    """Anything with a binary ``write``: a file, a socket file, an ObjectWriter."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


class _State(Enum):
    OPEN = "open"
    FINISHED = "finished"
    ABANDONED = "abandoned"
    BROKEN = "broken"


def write_all(destination: Writable, data: memoryview | bytes) -> None:
    """Write all of ``data``, continuing after short writes of raw files."""
    view = memoryview(data)
    while view:
        written = destination.write(view)
        if written is None:
            return
        if written <= 0:
            raise OSError("the destination accepted no bytes")
        view = view[written:]


class EncryptingStream(io.RawIOBase):
    """A writable binary file object encrypting into a destination.

    Made by :func:`crypto.stream.new_encrypting_stream`. Write plaintext, then
    :meth:`close` to seal the last segment; until then the destination holds
    a stream that a reader refuses as truncated. :meth:`close` does not close
    the destination. As a context manager it closes on normal exit and
    :meth:`abandon`\\ s if the body raises, so a failed upload is never sealed.
    Not thread-safe: one writer per stream.
    """

    def __init__(self, cipher: SegmentCipher, header: bytes, destination: Writable) -> None:
        super().__init__()
        self._cipher = cipher
        self._destination = destination
        self._buffer = bytearray(SEGMENT_BYTES)
        self._view = memoryview(self._buffer)
        self._out = memoryview(bytearray(CIPHERTEXT_SEGMENT_BYTES))
        self._filled = 0
        self._index = 0
        self._written = 0
        self._state = _State.OPEN
        write_all(destination, header)

    @property
    def plaintext_bytes(self) -> int:
        """How many plaintext bytes have been written so far."""
        return self._written

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:  # type: ignore[override]
        """Encrypt ``data``; returns ``len(data)`` (every byte is taken).

        Raises
        ------
        ValueError
            The stream is closed, abandoned, or broken by an earlier failure.
        CryptoError
            The stream would exceed the format's size limit.
        """
        self._check_open()
        view = memoryview(data).cast("B")
        try:
            self._absorb(view)
        except BaseException:
            self._state = _State.BROKEN
            raise
        self._written += len(view)
        return len(view)

    def close(self) -> None:
        """Seal and write the last segment, then close (not the destination)."""
        if self.closed:
            return
        try:
            if self._state is _State.OPEN:
                self._state = _State.BROKEN
                self._seal(self._view[: self._filled], last=True)
                self._state = _State.FINISHED
        finally:
            self._release()

    def abandon(self) -> None:
        """Close without sealing: what was written stays detectably incomplete.

        Call it (or leave a ``with`` block by an exception) when the plaintext
        is not complete; the caller should also abort the destination.
        """
        if not self.closed:
            self._state = _State.ABANDONED
            self._release()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def __del__(self) -> None:
        # Never seal implicitly: an unclosed stream must read as truncated.
        self.abandon()

    def __reduce__(self) -> NoReturn:
        raise TypeError("an encrypting stream cannot be pickled")

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("write to a closed encrypting stream")
        if self._state is not _State.OPEN:
            raise ValueError("the encrypting stream failed earlier and cannot continue")

    def _absorb(self, view: memoryview) -> None:
        position, size = 0, len(view)
        while position < size:
            if self._filled == SEGMENT_BYTES:
                self._seal(self._view, last=False)
                self._filled = 0
            if self._filled == 0 and size - position > SEGMENT_BYTES:
                self._seal(view[position : position + SEGMENT_BYTES], last=False)
                position += SEGMENT_BYTES
                continue
            take = min(SEGMENT_BYTES - self._filled, size - position)
            self._view[self._filled : self._filled + take] = view[position : position + take]
            self._filled += take
            position += take

    def _seal(self, plaintext: memoryview, *, last: bool) -> None:
        if self._index >= MAX_SEGMENTS:
            raise CryptoError("the stream exceeds the encrypted format's size limit")
        out = self._out[: len(plaintext) + TAG_BYTES]
        self._cipher.seal_into(self._index, last, plaintext, out)
        write_all(self._destination, out)
        self._index += 1

    def _release(self) -> None:
        self._view[:] = bytes(SEGMENT_BYTES)
        self._filled = 0
        super().close()
