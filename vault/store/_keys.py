"""Which object keys a store accepts.

Keys are made by :func:`vault.store.base.new_object_key`; a key given by a
caller must look like one: a relative path of ``/``-separated parts made of
ASCII letters, digits, ``.``, ``_`` and ``-``, no part empty or starting with
a dot (so no ``.``, ``..`` or hidden name, which the filesystem store keeps for
its temporary files). Refusals never repeat the key, which may carry anything.
"""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 512
_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def checked_key(key: str) -> str:
    """Return ``key`` unchanged if it is an acceptable object key.

    Raises
    ------
    ValueError
        The key is empty, too long, absolute, or has an empty, dot-leading or
        non-ASCII part, any of which could escape a store's root.
    """
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ValueError("object key refused: empty or too long")
    if not all(_PART.fullmatch(part) for part in key.split("/")):
        raise ValueError("object key refused: not a relative path of plain parts")
    return key
