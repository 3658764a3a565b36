"""Redis for the test session: one free database of the machine's server, flushed after.

The server is the machine's (127.0.0.1:6379) or the one named by
``DICOM_VAULT_TEST_REDIS`` (``redis://host:port``, no database number). The
session claims the first empty database (1 to 15; 0 is left alone) with a
marker key set only if absent, so parallel sessions never share one, and
flushes it at the end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis

from tests.services._require import missing_service

SERVER_URL = os.environ.get("DICOM_VAULT_TEST_REDIS", "redis://127.0.0.1:6379")
CLAIM_KEY = "dicom-vault-test:claimed-by"
DATABASES = range(1, 16)


def _client(db: int) -> redis.Redis:
    return redis.Redis.from_url(f"{SERVER_URL}/{db}", socket_connect_timeout=5)


def _claim(token: str) -> int | None:
    """The number of an empty database now marked as ours, or None if all are taken."""
    for db in DATABASES:
        client = _client(db)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True):
                if client.dbsize() == 1:
                    return db
                client.delete(CLAIM_KEY)
        finally:
            client.close()
    return None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A ``redis://`` URL of a database for this session alone (flushed at the end)."""
    token = secrets.token_hex(8)
    try:
        db = _claim(token)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        missing_service("Redis", f"cannot connect ({type(exc).__name__})")
    if db is None:
        missing_service("Redis", "no empty database to use among 1-15")
    yield f"{SERVER_URL}/{db}"
    client = _client(db)
    try:
        client.flushdb()
    finally:
        client.close()
