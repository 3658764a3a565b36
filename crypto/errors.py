"""Exceptions raised by the crypto package.

They carry no key material, nonce or plaintext, and no data identifiers.
``vault.errors`` maps them to HTTP and DIMSE statuses with the others.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of the crypto package's errors."""

    reason: str = "crypto"


class IntegrityError(CryptoError):
    """Ciphertext or header failed authentication: tampered, truncated or corrupt.

    Raised before any unauthenticated plaintext is released.
    """

    reason = "integrity"


class KeyDestroyedError(CryptoError):
    """The data key was destroyed (crypto-shredded); the data is gone for good."""

    reason = "destroyed"


class KeyProviderError(CryptoError):
    """The key provider could not create, wrap or unwrap a key."""

    reason = "key-provider"


class UnsupportedFormat(IntegrityError):
    """The header names a format version this build does not know."""

    reason = "unsupported-format"
