"""Generate ``stream_v1.json``: known-answer vectors for the encrypted stream format.

Fixed key, salt and nonce prefix go into a stream assembled here from the
format's own pieces (:func:`fixed_encrypting_stream`), as
``crypto.stream.new_encrypting_stream`` assembles it with random ones; the
production API offers no way to choose them. Plaintexts follow a
rule (byte ``i`` is ``i mod 251``) so they need not be stored; ciphertexts are
stored whole, in base64, so another implementation can check its decryption.

Run from the repository root: ``.venv/bin/python -m tests.vectors.make_vectors``.
Re-running must reproduce the checked-in file byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

from crypto._encrypting import EncryptingStream, Writable
from crypto._header import build_header
from crypto._segment import (
    SEGMENT_BYTES,
    SegmentCipher,
    derive_stream_key,
    segment_associated_data,
)

VECTORS_PATH = Path(__file__).with_name("stream_v1.json")
PLAINTEXT_RULE = "byte i of the plaintext is i mod 251"

# (name, plaintext size, key id, associated data)
CASES: tuple[tuple[str, int, str, bytes], ...] = (
    ("empty", 0, "dek-vector-0001", b"obj/00/vector-empty"),
    ("one-byte", 1, "dek-vector-0001", b"obj/01/vector-one-byte"),
    ("short-no-associated-data", 100, "dek-vector-0002", b""),
    ("one-full-last-segment", SEGMENT_BYTES, "dek-vector-0001", b"obj/02/vector-full"),
    ("two-segments", SEGMENT_BYTES + 1, "dek-vector-0003", b"obj/03/vector-two"),
)


def rule_plaintext(size: int) -> bytes:
    """The plaintext of ``size`` bytes following PLAINTEXT_RULE."""
    pattern = bytes(range(251))
    repeats = -(-size // len(pattern))
    return (pattern * repeats)[:size]


def fixed_material(number: int) -> tuple[bytes, bytes, bytes]:
    """Key, salt and nonce prefix of vector ``number``: fixed, distinct, not secret."""
    key = bytes((number * 32 + i) & 0xFF for i in range(32))
    salt = hashlib.sha256(b"dicom-vault vector salt %d" % number).digest()
    prefix = hashlib.sha256(b"dicom-vault vector nonce prefix %d" % number).digest()[:7]
    return key, salt, prefix


def fixed_encrypting_stream(
    key_bytes: bytes,
    key_id: str,
    destination: Writable,
    associated_data: bytes,
    *,
    salt: bytes,
    nonce_prefix: bytes,
) -> EncryptingStream:
    """An encrypting stream with a fixed salt and nonce prefix: for known answers only.

    Reusing a salt under one key repeats nonces, which is why this lives in the
    tests and not in ``crypto``.
    """
    header = build_header(key_id, salt, nonce_prefix)
    cipher = SegmentCipher(key_bytes, header, associated_data)
    return EncryptingStream(cipher, header.encoded, destination)


def make_vector(number: int, name: str, size: int, key_id: str, associated_data: bytes) -> dict:
    """Encrypt one case and describe it."""
    key_bytes, salt, prefix = fixed_material(number)
    plaintext = rule_plaintext(size)
    sink = io.BytesIO()
    with fixed_encrypting_stream(
        key_bytes, key_id, sink, associated_data, salt=salt, nonce_prefix=prefix
    ) as stream:
        stream.write(plaintext)
    ciphertext = sink.getvalue()
    header = build_header(key_id, salt, prefix)
    return {
        "name": name,
        "key_hex": key_bytes.hex(),
        "key_id": key_id,
        "salt_hex": salt.hex(),
        "nonce_prefix_hex": prefix.hex(),
        "associated_data_hex": associated_data.hex(),
        "plaintext_size": size,
        "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
        "header_hex": header.encoded.hex(),
        "stream_key_hex": derive_stream_key(key_bytes, salt).hex(),
        "segment_aad_hex": segment_associated_data(header, associated_data).hex(),
        "ciphertext_size": len(ciphertext),
        "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
        "ciphertext_base64": base64.b64encode(ciphertext).decode("ascii"),
    }


def make_document() -> dict:
    """The whole vectors document."""
    return {
        "format": "dicom-vault encrypted stream (crypto/FORMAT.md)",
        "version": 1,
        "segment_bytes": SEGMENT_BYTES,
        "plaintext_rule": PLAINTEXT_RULE,
        "vectors": [make_vector(n, *case) for n, case in enumerate(CASES)],
    }


def main() -> None:
    text = json.dumps(make_document(), indent=1) + "\n"
    VECTORS_PATH.write_text(text, encoding="ascii")
    print(f"wrote {len(CASES)} vectors to {VECTORS_PATH}")


if __name__ == "__main__":
    main()
