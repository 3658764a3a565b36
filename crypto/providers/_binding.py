"""What the key providers share: the wrap binding, the blob layout, names.

A wrapped DEK is bound to its DEK ``key_id`` and to the ``kek_id`` that
wrapped it by AES-GCM associated data, so a blob moved onto another key id,
or presented as wrapped by another KEK, fails authentication.

Blob layout of the ``local`` and ``pkcs11`` providers (61 bytes)::

    version (1 byte, 0x01) | nonce (12 bytes) | AES-256-GCM ciphertext (32) | tag (16)

The ``transit`` provider's blob is the Transit ciphertext string instead.

A *period seal* (see ``docs/KEYS.md``) wraps an already wrapped DEK a second
time, under a period key, bound to the DEK ``key_id`` and the period key's id
by :func:`seal_associated_data`. Layout of the ``local`` and ``pkcs11`` seal::

    version (1 byte, 0x02) | nonce (12 bytes) | AES-256-GCM ciphertext (n) | tag (16)
"""

from __future__ import annotations

import re

from crypto.errors import KeyProviderError
from crypto.keys import DEK_BYTES

BLOB_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
BLOB_BYTES = 1 + NONCE_BYTES + DEK_BYTES + TAG_BYTES

SEAL_VERSION = 2
MAX_SEALED_BYTES = 1024

_AAD_DOMAIN = b"dicom-vault/dek-wrap/v1"
_SEAL_DOMAIN = b"dicom-vault/period-seal/v1"
_PURPOSE = re.compile(r"[a-z][a-z0-9-]{0,62}")
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def associated_data(*, provider: str, kek_id: str, key_id: str) -> bytes:
    """The associated data binding a wrap to its provider, KEK and DEK ids.

    Each part is length-prefixed, so no two different triples encode alike.
    """
    parts = (_AAD_DOMAIN, provider.encode(), kek_id.encode(), key_id.encode())
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def seal_associated_data(*, provider: str, kek_id: str, key_id: str) -> bytes:
    """The associated data binding a period seal to its provider, period key and DEK ids."""
    parts = (_SEAL_DOMAIN, provider.encode(), kek_id.encode(), key_id.encode())
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def pack_sealed(nonce: bytes, sealed: bytes) -> bytes:
    """Lay out a period seal: version byte, nonce, ciphertext with tag."""
    return bytes([SEAL_VERSION]) + nonce + sealed


def unpack_sealed(blob: bytes) -> tuple[bytes, bytes]:
    """Split a period seal into (nonce, ciphertext with tag).

    Raises
    ------
    KeyProviderError
        The seal is too short, too long or has an unknown version byte.
    """
    if not 1 + NONCE_BYTES + TAG_BYTES < len(blob) <= MAX_SEALED_BYTES or blob[0] != SEAL_VERSION:
        raise KeyProviderError("sealed key is malformed")
    return blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]


def check_period(period: str) -> str:
    """Return ``period`` if it names a calendar month, ``YYYY-MM``.

    Raises
    ------
    ValueError
        It does not.
    """
    if not isinstance(period, str) or not _PERIOD.fullmatch(period):
        raise ValueError("a key period is a calendar month, YYYY-MM")
    return period


def pack_blob(nonce: bytes, sealed: bytes) -> bytes:
    """Lay out a wrapped key: version byte, nonce, ciphertext with tag."""
    return bytes([BLOB_VERSION]) + nonce + sealed


def unpack_blob(blob: bytes) -> tuple[bytes, bytes]:
    """Split a wrapped key into (nonce, ciphertext with tag).

    Raises
    ------
    KeyProviderError
        The blob has the wrong length or an unknown version byte.
    """
    if len(blob) != BLOB_BYTES or blob[0] != BLOB_VERSION:
        raise KeyProviderError("wrapped key is malformed")
    return blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]


def check_purpose(purpose: str) -> str:
    """Return ``purpose`` if it is a short lowercase name safe in labels and URLs.

    Raises
    ------
    ValueError
        It is not ``[a-z][a-z0-9-]{0,62}``.
    """
    if not _PURPOSE.fullmatch(purpose):
        raise ValueError("a MAC purpose is a short lowercase name: [a-z][a-z0-9-]*")
    return purpose


def parse_version(kek_id: str, pattern: re.Pattern[str], provider: str) -> int:
    """The version number in ``kek_id``, which must match ``pattern`` in full.

    Raises
    ------
    KeyProviderError
        ``kek_id`` does not name a KEK of this provider.
    """
    match = pattern.fullmatch(kek_id)
    if match is None:
        raise KeyProviderError(f"the KEK id does not name a {provider} KEK of this deployment")
    return int(match.group("version"))
