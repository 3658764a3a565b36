"""Random bearer secrets (session ids, API tokens, link tokens) and their digests.

A bearer secret is 256 random bits, shown once to its holder; the catalog keeps
only its SHA-256 digest, so a copy of the catalog does not let anyone in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret(prefix: str = "") -> str:
    """A fresh URL-safe secret of 256 random bits, with an optional type prefix."""
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The hex SHA-256 digest stored in place of ``secret``."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())
