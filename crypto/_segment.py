"""Per-segment AES-256-GCM: key derivation, nonces, associated data and sizes.

One :class:`SegmentCipher` serves one stream. It derives the stream's own
AES-256 key from the data key and the header's salt (HKDF-SHA256), builds each
nonce as ``nonce_prefix || segment index (uint32, big-endian) || last flag``,
and authenticates every segment with ``header || SHA-256(associated_data)``.
Streams call it with a segment index and a last-segment flag only; nothing
else about nonces or keys leaves this module.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto._header import NONCE_PREFIX_BYTES, StreamHeader, header_size
from crypto.errors import IntegrityError

SEGMENT_BYTES = 256 * 1024
TAG_BYTES = 16
CIPHERTEXT_SEGMENT_BYTES = SEGMENT_BYTES + TAG_BYTES
# 2**22 segments of 256 KiB = 1 TiB = 2**36 AES blocks per derived key.
MAX_SEGMENTS = 2**22
MAX_PLAINTEXT_BYTES = MAX_SEGMENTS * SEGMENT_BYTES

_HKDF_INFO = b"dicom-vault stream v1 segment key"
_INDEX_AND_FLAG = struct.Struct(">IB")

Buffer = bytes | bytearray | memoryview


def derive_stream_key(data_key: bytes, salt: bytes) -> bytes:
    """The stream's AES-256 key: HKDF-SHA256(ikm=DEK, salt=salt, info=label)."""
    return HKDF(algorithm=SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(data_key)


def segment_associated_data(header: StreamHeader, associated_data: Buffer) -> bytes:
    """What every segment authenticates: the header and the object's identity."""
    return header.encoded + hashlib.sha256(associated_data).digest()


class SegmentCipher:
    """Seals and opens the segments of one stream."""

    __slots__ = ("_aad", "_aead", "_nonce")

    def __init__(self, data_key: bytes, header: StreamHeader, associated_data: Buffer) -> None:
        self._aead = AESGCM(derive_stream_key(data_key, header.salt))
        self._aad = segment_associated_data(header, associated_data)
        self._nonce = bytearray(NONCE_PREFIX_BYTES + _INDEX_AND_FLAG.size)
        self._nonce[:NONCE_PREFIX_BYTES] = header.nonce_prefix

    def _nonce_for(self, index: int, last: bool) -> bytearray:
        _INDEX_AND_FLAG.pack_into(self._nonce, NONCE_PREFIX_BYTES, index, 1 if last else 0)
        return self._nonce

    def seal_into(self, index: int, last: bool, plaintext: Buffer, out: memoryview) -> None:
        """Encrypt segment ``index`` into ``out`` (exactly len(plaintext) + 16 bytes)."""
        self._aead.encrypt_into(self._nonce_for(index, last), plaintext, self._aad, out)

    def open_into(self, index: int, last: bool, ciphertext: Buffer, out: memoryview) -> None:
        """Decrypt and verify segment ``index`` into ``out`` (len(ciphertext) - 16).

        On failure ``out`` is wiped: OpenSSL writes plaintext before it checks
        the tag, and those bytes must never be released.

        Raises
        ------
        IntegrityError
            The segment is not the authentic segment ``index`` with this flag.
        """
        try:
            self._aead.decrypt_into(self._nonce_for(index, last), ciphertext, self._aad, out)
        except InvalidTag:
            out[:] = bytes(len(out))
            raise IntegrityError(
                "an encrypted segment failed authentication: tampered, reordered, "
                "truncated, or the wrong key or object"
            ) from None


def segment_count(plaintext_size: int) -> int:
    """How many segments a plaintext of this size is cut into (at least one)."""
    return max(1, -(-plaintext_size // SEGMENT_BYTES))


def ciphertext_size(plaintext_size: int, key_id: str) -> int:
    """Exact size of the encrypted stream of ``plaintext_size`` bytes under ``key_id``.

    Raises
    ------
    ValueError
        Negative size, beyond the format's limit, or a key id that cannot be written.
    """
    if not 0 <= plaintext_size <= MAX_PLAINTEXT_BYTES:
        raise ValueError("plaintext size outside the format's limits")
    return header_size(key_id) + plaintext_size + TAG_BYTES * segment_count(plaintext_size)


def plaintext_size(ciphertext_size: int, key_id: str) -> int:
    """The plaintext size an intact encrypted stream of ``ciphertext_size`` bytes holds.

    Raises
    ------
    IntegrityError
        No intact stream has that size (it is truncated or has extra bytes).
    """
    body = ciphertext_size - header_size(key_id)
    full, rest = divmod(body, CIPHERTEXT_SEGMENT_BYTES)
    if body < TAG_BYTES or (full and 0 < rest <= TAG_BYTES) or full + (rest > 0) > MAX_SEGMENTS:
        raise IntegrityError("no intact encrypted stream has this size")
    return body - TAG_BYTES * (full + (1 if rest else 0))
