"""Sealing the DPO's free text under a record's own data key.

Data-subject requests and breach-register incidents carry notes written by
people (how an identity was checked, what happened in an incident) that may
mention a patient. They are never stored in clear: :func:`seal_text`
encrypts a note with the record's data key through the project's streaming
format (``crypto/FORMAT.md``), bound to a context string naming the record
and field, so a sealed note moved to another record or field fails to open.
:func:`open_text` reverses it. Callers handle :class:`~crypto.keys.DataKey`
handles only, never nonces or key bytes.
"""

from __future__ import annotations

import io

from crypto import new_decrypting_stream, new_encrypting_stream
from crypto.keys import DataKey
from vault.errors import InvalidInput

MAX_TEXT_CHARS = 4000


def checked_text(text: str, *, required: bool = False) -> str:
    """``text`` stripped, refused if too long (or empty when ``required``).

    Raises:
        InvalidInput: over :data:`MAX_TEXT_CHARS`, or empty when required.
    """
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"a note is at most {MAX_TEXT_CHARS} characters", reason="note-length")
    if required and not text:
        raise InvalidInput("a note is required here", reason="note-missing")
    return text


def seal_text(key: DataKey, text: str, context: str) -> bytes:
    """``text`` encrypted under ``key``, bound to ``context`` (record id and field)."""
    buffer = io.BytesIO()
    with new_encrypting_stream(key, buffer, context.encode()) as sealing:
        sealing.write(text.encode("utf-8"))
    return buffer.getvalue()


def open_text(key: DataKey, sealed: bytes, context: str) -> str:
    """The text :func:`seal_text` sealed under ``key`` for ``context``.

    Raises:
        IntegrityError: the bytes were altered, or belong to another context.
    """
    with new_decrypting_stream(key, io.BytesIO(sealed), context.encode()) as opened:
        return opened.read().decode("utf-8")
