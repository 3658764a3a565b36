"""Reading a stored original instance back: catalog look-up, key, decryption.

:func:`open_instance` looks the instance up, opens its data key (refusing a
destroyed one with :class:`~crypto.errors.KeyDestroyedError`), and returns
the plaintext stream of :func:`vault.objects.open_decrypted`, which checks
every segment and, at the end, the catalogued SHA-256 (a caller streaming to a
client must abort that response on :class:`~crypto.errors.IntegrityError`).
"""

from __future__ import annotations

import io

from vault.catalog.models import Instance
from vault.core import Vault
from vault.errors import NotFound
from vault.objects import StoredObject, open_decrypted


def open_instance(vault: Vault, instance_id: str) -> io.BufferedReader:
    """A buffered plaintext stream of original instance ``instance_id``.

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
        stored = StoredObject(row.object_key, row.key_id, row.sha256, row.size)
    return open_decrypted(vault.store, key, stored)
