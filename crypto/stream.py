"""The streaming authenticated encryption front door (format in ``crypto/FORMAT.md``).

Encrypt by writing to a file object, decrypt by reading from one; callers
never see nonces, raw keys or segment sizes::

    with new_encrypting_stream(key, writer, associated_data=object_key.encode()) as out:
        shutil.copyfileobj(upload, out)

    with new_decrypting_stream(key, reader, associated_data=object_key.encode()) as plain:
        for chunk in plain:
            send(chunk)

``associated_data`` is the object's identity (its object key, say): a stream
decrypts only with the same bytes, so ciphertext moved to another object is
refused. Every refusal is :class:`~crypto.errors.IntegrityError` (or its
subclass :class:`~crypto.errors.UnsupportedFormat`), raised before any byte
of an unauthenticated segment reaches the caller.
"""

from __future__ import annotations

import secrets

from crypto._decrypting import DecryptingStream
from crypto._encrypting import EncryptingStream, Writable, write_all
from crypto._header import (
    HEADER_MAX,
    NONCE_PREFIX_BYTES,
    SALT_BYTES,
    Readable,
    StreamHeader,
    build_header,
    parse_header,
    read_header,
)
from crypto._segment import (
    MAX_PLAINTEXT_BYTES,
    SEGMENT_BYTES,
    Buffer,
    SegmentCipher,
    ciphertext_size,
    plaintext_size,
)
from crypto.errors import IntegrityError
from crypto.keys import DataKey, _material

__all__ = [
    "HEADER_MAX",
    "MAX_PLAINTEXT_BYTES",
    "DecryptingStream",
    "EncryptingStream",
    "Readable",
    "StreamHeader",
    "Writable",
    "ciphertext_size",
    "decrypt_stream",
    "encrypt_stream",
    "new_decrypting_stream",
    "new_encrypting_stream",
    "peek_key_id",
    "plaintext_size",
    "read_header",
]

_PUMP_BYTES = 4 * SEGMENT_BYTES


def _check_inputs(key: DataKey, associated_data: Buffer) -> None:
    if not isinstance(key, DataKey):
        raise TypeError("key must be a DataKey")
    if not isinstance(associated_data, bytes | bytearray | memoryview):
        raise TypeError("associated_data must be bytes")


def new_encrypting_stream(
    key: DataKey, destination: Writable, associated_data: Buffer
) -> EncryptingStream:
    """A writable file object encrypting under ``key`` into ``destination``.

    The header is written to ``destination`` at once. ``close()`` seals the
    last segment and leaves ``destination`` open; leaving a ``with`` block by
    an exception, or :meth:`~EncryptingStream.abandon`, does not seal it.

    Parameters
    ----------
    key:
        The data key; its ``key_id`` is written into the header.
    destination:
        Where the encrypted stream goes; must copy or consume what ``write``
        is given before returning, as files do.
    associated_data:
        The object's identity (e.g. its object key); needed again to decrypt.

    Raises
    ------
    ValueError
        The key id cannot be written into a header (see FORMAT.md).
    """
    _check_inputs(key, associated_data)
    salt = secrets.token_bytes(SALT_BYTES)
    nonce_prefix = secrets.token_bytes(NONCE_PREFIX_BYTES)
    header = build_header(key.key_id, salt, nonce_prefix)
    cipher = SegmentCipher(_material(key), header, associated_data)
    return EncryptingStream(cipher, header.encoded, destination)


def new_decrypting_stream(
    key: DataKey,
    source: Readable,
    associated_data: Buffer,
    *,
    header: StreamHeader | None = None,
) -> DecryptingStream:
    """A readable file object releasing the verified plaintext of ``source``.

    Parameters
    ----------
    key:
        The data key named in the stream's header.
    source:
        The encrypted stream (``readinto`` is used when it has one).
    associated_data:
        The same bytes given when encrypting.
    header:
        The header if the caller already consumed it with :func:`read_header`
        (to learn the key id); otherwise it is read from ``source`` here.

    Raises
    ------
    UnsupportedFormat
        The header names an unknown format version.
    IntegrityError
        The header is malformed or names another key.
    """
    _check_inputs(key, associated_data)
    if header is None:
        header = read_header(source)
    if header.key_id != key.key_id:
        raise IntegrityError("the encrypted stream names a different data key")
    cipher = SegmentCipher(_material(key), header, associated_data)
    return DecryptingStream(cipher, source)


def peek_key_id(leading: Buffer) -> str:
    """The key id named by the header at the start of ``leading``.

    ``leading`` needs at most :data:`HEADER_MAX` bytes (more are ignored).
    The id is not yet authenticated: use it to fetch the key, nothing else.

    Raises
    ------
    UnsupportedFormat, IntegrityError
        As for :func:`read_header`.
    """
    return parse_header(leading).key_id


def _readinto_or_read(source: Readable, view: memoryview) -> int:
    readinto = getattr(source, "readinto", None)
    if readinto is not None:
        return readinto(view) or 0
    data = source.read(len(view))
    view[: len(data)] = data
    return len(data)


def encrypt_stream(
    key: DataKey, source: Readable, destination: Writable, associated_data: Buffer
) -> int:
    """Encrypt all of ``source`` into ``destination``; returns the plaintext size.

    The stream is sealed only if ``source`` was read to its end.
    """
    chunk = memoryview(bytearray(_PUMP_BYTES))
    with new_encrypting_stream(key, destination, associated_data) as encrypting:
        while got := _readinto_or_read(source, chunk):
            encrypting.write(chunk[:got])
        return encrypting.plaintext_bytes


def decrypt_stream(
    key: DataKey, source: Readable, destination: Writable, associated_data: Buffer
) -> int:
    """Decrypt all of ``source`` into ``destination``; returns the plaintext size.

    Raises IntegrityError on any tampering; ``destination`` then holds an
    authentic prefix of the plaintext, which the caller must discard.
    """
    chunk = memoryview(bytearray(_PUMP_BYTES))
    total = 0
    with new_decrypting_stream(key, source, associated_data) as decrypting:
        while got := decrypting.readinto(chunk):
            write_all(destination, chunk[:got])
            total += got
    return total
