"""Encrypted objects: the one writer and the one reader of the object store.

:func:`write_encrypted` streams plaintext through the format of
``crypto/FORMAT.md`` into a fresh random object key, hashing the plaintext on
the way; it commits only when the whole stream (and the caller's last check)
succeeded, and leaves nothing behind otherwise. :func:`open_decrypted` is its
reverse: it authenticates every segment before releasing it and checks the
plaintext SHA-256 and size at the end. The ingest pipeline, de-identification,
downloads and exports all go through these two functions.

The object key is bound into every segment as associated data, so an object
copied under another key, or two objects swapped, fail to decrypt.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from crypto import new_decrypting_stream, new_encrypting_stream
from crypto.errors import IntegrityError
from crypto.keys import DataKey
from vault.errors import TooLarge
from vault.store import ObjectStore, new_object_key

CHUNK = 1024 * 1024

Sink = Callable[[bytes], object]


@dataclass(frozen=True)
class StoredObject:
    """Where an object is and what its plaintext must hash to."""

    object_key: str
    key_id: str
    sha256: str
    size: int


def _pump(source: BinaryIO, prefix: bytes, sinks: Sequence[Sink], limit: int) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    chunk = prefix or source.read(CHUNK)
    while chunk:
        size += len(chunk)
        if size > limit:
            raise TooLarge("the file is larger than this service accepts")
        hasher.update(chunk)
        for sink in sinks:
            sink(chunk)
        chunk = source.read(CHUNK)
    return hasher.hexdigest(), size


def hash_stream(
    source: BinaryIO, *, prefix: bytes = b"", limit: int, observers: Sequence[Sink] = ()
) -> tuple[str, int]:
    """SHA-256 and size of ``prefix`` plus the rest of ``source``, storing nothing.

    Parameters:
        observers: also fed every chunk.

    Raises:
        TooLarge: more than ``limit`` bytes.
    """
    return _pump(source, prefix, observers, limit)


def write_encrypted(
    store: ObjectStore,
    key: DataKey,
    source: BinaryIO,
    *,
    limit: int,
    prefix: bytes = b"",
    observers: Sequence[Sink] = (),
    before_commit: Callable[[], None] | None = None,
) -> StoredObject:
    """Encrypt ``prefix`` + ``source`` under ``key`` into a new object.

    Parameters:
        observers: also fed every plaintext chunk (e.g. a completeness check).
        before_commit: a last check; if it raises, nothing is stored.

    Raises:
        TooLarge: more than ``limit`` bytes; nothing is stored.
    """
    object_key = new_object_key()
    with store.open_writer(object_key) as writer:
        with new_encrypting_stream(key, writer, object_key.encode()) as encrypting:
            digest, size = _pump(source, prefix, (encrypting.write, *observers), limit)
        if before_commit is not None:
            before_commit()
    return StoredObject(object_key, key.key_id, digest, size)


class _VerifyingReader(io.RawIOBase):
    """Plaintext of one object, checked against its expected SHA-256 and size at EOF."""

    def __init__(self, plaintext: BinaryIO, ciphertext: BinaryIO, expected: StoredObject) -> None:
        super().__init__()
        self._plaintext = plaintext
        self._ciphertext = ciphertext
        self._expected = expected
        self._hasher = hashlib.sha256()
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._plaintext.read(len(buffer))
        if not data:
            self._verify()
            return 0
        self._hasher.update(data)
        self._read += len(data)
        buffer[: len(data)] = data
        return len(data)

    def _verify(self) -> None:
        expected = self._expected
        if self._read != expected.size or self._hasher.hexdigest() != expected.sha256:
            raise IntegrityError("the stored object does not match its catalogued checksum")

    def close(self) -> None:
        if not self.closed:
            self._ciphertext.close()
        super().close()


def open_decrypted(store: ObjectStore, key: DataKey, stored: StoredObject) -> io.BufferedReader:
    """A buffered plaintext stream of ``stored``, decrypted with ``key``.

    Raises (while reading):
        IntegrityError: tampered, truncated, swapped, or not matching its SHA-256.
    """
    ciphertext = store.open_reader(stored.object_key)
    plaintext = new_decrypting_stream(key, ciphertext, stored.object_key.encode())
    return io.BufferedReader(_VerifyingReader(plaintext, ciphertext, stored), CHUNK)
