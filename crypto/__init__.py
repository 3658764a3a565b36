"""Envelope encryption for dicom-vault: key handles and the streaming format.

The front door: :class:`DataKey` handles (no bytes exposed), the
:class:`KeyProvider` and :class:`MacKey` interfaces, :class:`WrappedKey`, the
streaming functions of :mod:`crypto.stream` (byte layout in ``FORMAT.md``)
and the package's errors.
"""

from crypto.errors import (
    CryptoError,
    IntegrityError,
    KeyDestroyedError,
    KeyProviderError,
    UnsupportedFormat,
)
from crypto.keys import DataKey, KeyProvider, MacKey, WrappedKey
from crypto.stream import (
    HEADER_MAX,
    MAX_PLAINTEXT_BYTES,
    DecryptingStream,
    EncryptingStream,
    StreamHeader,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    new_decrypting_stream,
    new_encrypting_stream,
    peek_key_id,
    plaintext_size,
    read_header,
)

__all__ = [
    "HEADER_MAX",
    "MAX_PLAINTEXT_BYTES",
    "CryptoError",
    "DataKey",
    "DecryptingStream",
    "EncryptingStream",
    "IntegrityError",
    "KeyDestroyedError",
    "KeyProvider",
    "KeyProviderError",
    "MacKey",
    "StreamHeader",
    "UnsupportedFormat",
    "WrappedKey",
    "ciphertext_size",
    "decrypt_stream",
    "encrypt_stream",
    "new_decrypting_stream",
    "new_encrypting_stream",
    "peek_key_id",
    "plaintext_size",
    "read_header",
]
