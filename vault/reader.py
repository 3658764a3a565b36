"""The one decrypting reader: downloads, de-identification and exports use it.

:func:`open_instance` looks the instance up, opens its data key (refusing a
destroyed one with :class:`~crypto.errors.KeyDestroyedError`), and returns a
readable stream of the plaintext. Every segment is authenticated before its
bytes are released; at the end the SHA-256 of everything read is compared to
the catalog's, and a mismatch raises :class:`~crypto.errors.IntegrityError`
(a caller streaming to a client must then abort that response).
"""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO

from crypto import new_decrypting_stream
from crypto.errors import IntegrityError
from vault.catalog.models import Instance
from vault.core import Vault
from vault.errors import NotFound


class InstanceReader(io.RawIOBase):
    """Plaintext of one stored instance, verified against its catalogued SHA-256."""

    def __init__(self, plaintext: BinaryIO, ciphertext: BinaryIO, sha256: str, size: int) -> None:
        super().__init__()
        self._plaintext = plaintext
        self._ciphertext = ciphertext
        self._expected = sha256
        self._hasher = hashlib.sha256()
        self._read = 0
        self.size = size

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
        if self._read != self.size or self._hasher.hexdigest() != self._expected:
            raise IntegrityError("the stored instance does not match its catalogued checksum")

    def close(self) -> None:
        if not self.closed:
            self._ciphertext.close()
        super().close()


def open_instance(vault: Vault, instance_id: str) -> io.BufferedReader:
    """A buffered plaintext stream of instance ``instance_id``.

    Raises:
        NotFound: no such instance.
        KeyDestroyedError: its data key was destroyed.
        IntegrityError: (while reading) the object was tampered with.
    """
    with vault.catalog.session() as session:
        row = session.get(Instance, instance_id)
        if row is None:
            raise NotFound("no such instance")
        key = vault.keyring.data_key(row.key_id, session=session)
        object_key, sha256, size = row.object_key, row.sha256, row.size
    ciphertext = vault.store.open_reader(object_key)
    plaintext = new_decrypting_stream(key, ciphertext, object_key.encode())
    return io.BufferedReader(InstanceReader(plaintext, ciphertext, sha256, size), 1024 * 1024)
