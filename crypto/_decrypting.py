"""The decrypting side: a readable file object releasing only verified plaintext.

Each ciphertext segment is read whole, then the next one is read ahead (into
a second buffer) to learn whether the current one is the last; only then is
the current one opened, with the matching last-segment flag. Plaintext is
decrypted into the stream's private buffer and copied out only after its tag
verified, so a caller never holds a byte of an unauthenticated segment.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import NoReturn

from crypto._header import Readable
from crypto._segment import (
    CIPHERTEXT_SEGMENT_BYTES,
    MAX_SEGMENTS,
    SEGMENT_BYTES,
    TAG_BYTES,
    Buffer,
    SegmentCipher,
)
from crypto.errors import IntegrityError


def _filler(source: Readable) -> Callable[[memoryview], int]:
    """A function filling a buffer from ``source`` completely, or up to its end."""
    readinto = getattr(source, "readinto", None)

    def read_some(view: memoryview) -> int:
        if readinto is not None:
            return readinto(view) or 0
        data = source.read(len(view))
        view[: len(data)] = data
        return len(data)

    def fill(view: memoryview) -> int:
        filled = 0
        while filled < len(view):
            got = read_some(view[filled:])
            if got <= 0:
                break
            filled += got
        return filled

    return fill


class DecryptingStream(io.RawIOBase):
    """A readable binary file object over an encrypted stream.

    Made by :func:`crypto.stream.new_decrypting_stream`. ``read(n)`` returns
    ``n`` bytes unless the end is reached; ``read()`` returns the rest;
    ``readinto`` fills the buffer it is given; iterating yields chunks of at
    most one segment. The end (``b""``) is reported only after the last
    segment, carrying the last-segment flag, verified and nothing followed it.

    When a segment fails to verify, the bytes already returned are the
    authentic prefix of the plaintext; a read that had already gathered some
    bytes returns them, and that read's successor raises
    :class:`~crypto.errors.IntegrityError`, as does every read after it. The
    caller must then discard what it received. :meth:`close` does not close
    the source. Not thread-safe.
    """

    def __init__(self, cipher: SegmentCipher, source: Readable) -> None:
        super().__init__()
        self._cipher = cipher
        self._fill = _filler(source)
        self._segments = (
            memoryview(bytearray(CIPHERTEXT_SEGMENT_BYTES)),
            memoryview(bytearray(CIPHERTEXT_SEGMENT_BYTES)),
        )
        self._current = 0
        self._current_size = -1
        self._plain = memoryview(bytearray(SEGMENT_BYTES))
        self._position = 0
        self._end = 0
        self._index = 0
        self._last_opened = False
        self._failure: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:  # type: ignore[override]
        """Fill ``buffer`` with verified plaintext; returns the count (0 at the end)."""
        self._check_open()
        out = memoryview(buffer).cast("B")
        got = 0
        while got < len(out):
            if self._position == self._end:
                try:
                    if not self._advance():
                        break
                except IntegrityError:
                    if got:
                        return got
                    raise
            take = min(self._end - self._position, len(out) - got)
            out[got : got + take] = self._plain[self._position : self._position + take]
            self._position += take
            got += take
        return got

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes of verified plaintext (all that remain if negative)."""
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        parts: list[bytes] = []
        remaining = size
        while remaining:
            if self._position == self._end:
                try:
                    if not self._advance():
                        break
                except IntegrityError:
                    if parts:
                        break
                    raise
            start = self._position
            self._position = min(self._end, start + remaining)
            parts.append(bytes(self._plain[start : self._position]))
            remaining -= self._position - start
        # No preallocation of ``size``: memory follows the data, not the request.
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readall(self) -> bytes:
        """All remaining verified plaintext; raises IntegrityError rather than return part."""
        return b"".join(iter(self._next_chunk, b""))

    def __iter__(self) -> DecryptingStream:
        return self

    def __next__(self) -> bytes:
        chunk = self._next_chunk()
        if not chunk:
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Wipe the plaintext buffer and close (not the source)."""
        if not self.closed:
            self._plain[:] = bytes(SEGMENT_BYTES)
            self._position = self._end = 0
            super().close()

    def __reduce__(self) -> NoReturn:
        raise TypeError("a decrypting stream cannot be pickled")

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("read from a closed decrypting stream")

    def _next_chunk(self) -> bytes:
        self._check_open()
        if self._position == self._end and not self._advance():
            return b""
        start, self._position = self._position, self._end
        return bytes(self._plain[start : self._end])

    def _advance(self) -> bool:
        """Open the next segment into the plaintext buffer; False at the verified end."""
        if self._failure is not None:
            raise IntegrityError(self._failure)
        if self._last_opened:
            return False
        try:
            self._open_next()
        except IntegrityError as error:
            self._failure = str(error)
            self._position = self._end = 0
            raise
        return True

    def _open_next(self) -> None:
        if self._current_size < 0:
            self._current_size = self._fill(self._segments[self._current])
        size = self._current_size
        last = size < CIPHERTEXT_SEGMENT_BYTES
        if not last:
            following = 1 - self._current
            following_size = self._fill(self._segments[following])
            last = following_size == 0
        if size < TAG_BYTES:
            raise IntegrityError("the encrypted stream is truncated")
        if self._index >= MAX_SEGMENTS:
            raise IntegrityError("the encrypted stream exceeds the format's size limit")
        plain = self._plain[: size - TAG_BYTES]
        self._cipher.open_into(self._index, last, self._segments[self._current][:size], plain)
        self._index += 1
        self._position, self._end = 0, len(plain)
        self._last_opened = last
        if not last:
            self._current, self._current_size = following, following_size
