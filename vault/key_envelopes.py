"""Key envelopes and sealed data keys: the outside copies of the key hierarchy.

A data key's wrapped form in the catalog is *sealed* (``docs/KEYS.md``): the
DEK wrapped under the provider's KEK, then sealed under its period key's
current generation. :func:`pack_sealed` / :func:`unpack_sealed` lay that out
in ``data_keys.wrapped``::

    b"DVS1" | length of the period key id (2 bytes) | period key id | seal

A wrapped form without the ``DVS1`` mark is a data key from before period keys
(wrapped under the KEK only), which keeps working as it did.

A *key envelope* is a small JSON object holding the same sealed form and the
KEK id, one per live data key, kept in the key-envelope side store under the
data key's id: written when the key is created, replaced whenever its wrapped
form changes (re-wrap, period rotation), deleted when the key is destroyed.
Restoring a catalog backup refreshes the catalog's wrapped keys from the
envelopes: the only copies sealed under generations that still exist.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass

from vault.errors import NotFound
from vault.side_stores import purge
from vault.store import ObjectStore

SEALED_MARK = b"DVS1"
ENVELOPE_FORMAT = "dicom-vault-key-envelope/1"
MAX_ENVELOPE_BYTES = 8192


@dataclass(frozen=True)
class Envelope:
    """The current wrapped form of data key ``key_id``, as kept outside the catalog."""

    key_id: str
    kek_id: str
    wrapped: bytes


def pack_sealed(period_kek_id: str, seal: bytes) -> bytes:
    """The wrapped-key bytes of a DEK sealed under period key ``period_kek_id``."""
    name = period_kek_id.encode("ascii")
    return SEALED_MARK + len(name).to_bytes(2, "big") + name + seal


def unpack_sealed(wrapped: bytes) -> tuple[str, bytes] | None:
    """(period key id, seal) of sealed wrapped-key bytes; None for a pre-period key.

    Raises:
        ValueError: marked as sealed but malformed.
    """
    if not wrapped.startswith(SEALED_MARK):
        return None
    length = int.from_bytes(wrapped[4:6], "big")
    name, seal = wrapped[6 : 6 + length], wrapped[6 + length :]
    if len(name) != length or not seal:
        raise ValueError("sealed key is malformed")
    return name.decode("ascii"), seal


def write_envelope(store: ObjectStore, envelope: Envelope) -> None:
    """Write (or replace) the envelope of ``envelope.key_id``."""
    document = {
        "format": ENVELOPE_FORMAT,
        "key_id": envelope.key_id,
        "kek_id": envelope.kek_id,
        "wrapped": base64.b64encode(envelope.wrapped).decode("ascii"),
    }
    with store.open_writer(envelope.key_id) as writer:
        writer.write(json.dumps(document, sort_keys=True).encode())


def read_envelope(store: ObjectStore, key_id: str) -> Envelope | None:
    """The envelope of data key ``key_id``; None if there is none or it is unusable."""
    try:
        with store.open_reader(key_id) as reader:
            raw = reader.read(MAX_ENVELOPE_BYTES + 1)
    except NotFound:
        return None
    return _decode(raw, key_id)


def delete_envelope(store: ObjectStore, key_id: str) -> None:
    """Delete every copy of the envelope of ``key_id`` (all versions, where kept)."""
    purge(store, key_id)


def _decode(raw: bytes, key_id: str) -> Envelope | None:
    if len(raw) > MAX_ENVELOPE_BYTES:
        return None
    try:
        document = json.load(io.BytesIO(raw))
        if document["format"] != ENVELOPE_FORMAT or document["key_id"] != key_id:
            return None
        wrapped = base64.b64decode(document["wrapped"], validate=True)
        return Envelope(key_id=key_id, kek_id=str(document["kek_id"]), wrapped=wrapped)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
