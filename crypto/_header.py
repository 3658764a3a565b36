"""The stream header: its byte layout, how it is written, read and checked.

Layout of format version 1 (all of it authenticated with every segment)::

    offset  size  field
    0       4     magic b"DVES" (dicom-vault encrypted stream)
    4       1     format version, 0x01
    5       1     key id length L, 1..KEY_ID_MAX
    6       L     key id, printable ASCII (0x21..0x7e)
    6+L     32    HKDF salt, random per object
    38+L    7     nonce prefix, random per object

Every length read from a header is capped before anything is allocated or
read on its strength; see ``crypto/FORMAT.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from crypto.errors import IntegrityError, UnsupportedFormat

MAGIC = b"DVES"
VERSION = 1
KEY_ID_MAX = 128
SALT_BYTES = 32
NONCE_PREFIX_BYTES = 7
_FIXED_BYTES = len(MAGIC) + 2
_TRAILER_BYTES = SALT_BYTES + NONCE_PREFIX_BYTES
HEADER_MIN = _FIXED_BYTES + 1 + _TRAILER_BYTES
HEADER_MAX = _FIXED_BYTES + KEY_ID_MAX + _TRAILER_BYTES


class Readable(Protocol):
    """Anything with a binary ``read(size)``, e.g. a file or a store reader."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class StreamHeader:
    """A parsed stream header. ``key_id`` is unauthenticated until a segment opens.

    Attributes
    ----------
    version:
        The format version byte.
    key_id:
        The id of the data key the stream was encrypted under: use it to fetch
        the key, never to decide anything else before decryption succeeds.
    encoded:
        The header's exact bytes (bound into every segment).
    """

    version: int
    key_id: str
    salt: bytes = field(repr=False)
    nonce_prefix: bytes = field(repr=False)
    encoded: bytes = field(repr=False)

    @property
    def size(self) -> int:
        """Length of the header in bytes."""
        return len(self.encoded)


def check_key_id(key_id: str) -> bytes:
    """The key id's header encoding. Raises ValueError if it cannot be written."""
    try:
        encoded = key_id.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("a key id must be printable ASCII") from None
    if not 1 <= len(encoded) <= KEY_ID_MAX:
        raise ValueError(f"a key id is 1 to {KEY_ID_MAX} bytes long")
    if any(not 0x21 <= byte <= 0x7E for byte in encoded):
        raise ValueError("a key id must be printable ASCII without spaces")
    return encoded


def header_size(key_id: str) -> int:
    """Length of the header naming ``key_id``."""
    return _FIXED_BYTES + len(check_key_id(key_id)) + _TRAILER_BYTES


def build_header(key_id: str, salt: bytes, nonce_prefix: bytes) -> StreamHeader:
    """A version-1 header for a new stream."""
    encoded_id = check_key_id(key_id)
    if len(salt) != SALT_BYTES or len(nonce_prefix) != NONCE_PREFIX_BYTES:
        raise ValueError("wrong salt or nonce prefix length")
    encoded = b"".join((MAGIC, bytes((VERSION, len(encoded_id))), encoded_id, salt, nonce_prefix))
    return StreamHeader(VERSION, key_id, bytes(salt), bytes(nonce_prefix), encoded)


def _check_fixed_part(fixed: bytes) -> int:
    """Validate magic, version and key id length; return the header's full size."""
    if len(fixed) < _FIXED_BYTES:
        raise IntegrityError("the encrypted stream is truncated inside its header")
    if fixed[: len(MAGIC)] != MAGIC:
        raise IntegrityError("not a dicom-vault encrypted stream")
    if fixed[4] != VERSION:
        raise UnsupportedFormat(f"unsupported encrypted stream format version {fixed[4]}")
    id_length = fixed[5]
    if not 1 <= id_length <= KEY_ID_MAX:
        raise IntegrityError("the stream header's key id length is out of bounds")
    return _FIXED_BYTES + id_length + _TRAILER_BYTES


def parse_header(data: bytes | bytearray | memoryview) -> StreamHeader:
    """Parse the header at the start of ``data`` (extra bytes after it are ignored).

    Raises
    ------
    UnsupportedFormat
        The version byte names a format this build does not know.
    IntegrityError
        Not a stream of this format, a length out of bounds, or too few bytes.
    """
    data = bytes(data[:HEADER_MAX])
    size = _check_fixed_part(data[:_FIXED_BYTES])
    if len(data) < size:
        raise IntegrityError("the encrypted stream is truncated inside its header")
    id_end = _FIXED_BYTES + data[5]
    try:
        key_id = data[_FIXED_BYTES:id_end].decode("ascii")
        check_key_id(key_id)
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError("the stream header's key id is malformed") from None
    salt = data[id_end : id_end + SALT_BYTES]
    prefix = data[id_end + SALT_BYTES : size]
    return StreamHeader(data[4], key_id, salt, prefix, data[:size])


def read_exactly(source: Readable, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at end of stream."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = source.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def read_header(source: Readable) -> StreamHeader:
    """Consume exactly the header from ``source`` and parse it (see parse_header)."""
    fixed = read_exactly(source, _FIXED_BYTES)
    size = _check_fixed_part(fixed)
    return parse_header(fixed + read_exactly(source, size - _FIXED_BYTES))
