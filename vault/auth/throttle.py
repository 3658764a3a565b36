"""Login throttling: lock an account or a client address after repeated failures.

Counters live in the catalog (shared by every API process) under a key per
account (``acct:`` and the SHA-256 of the lower-cased e-mail, so unknown
addresses are counted, and locked, exactly like known ones) and per client
address (``addr:``). Reaching the threshold within the lock-out window locks
the key for the lock-out duration; time comes from the injected clock.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from vault.catalog.accounts import LoginThrottle
from vault.clock import Clock
from vault.settings import AuthSettings


def account_key(email: str) -> str:
    return "acct:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def address_key(remote: str | None) -> str:
    return "addr:" + (remote or "unknown")[:64]


class Throttle:
    """Counts failures and answers whether a key is locked."""

    def __init__(self, settings: AuthSettings, clock: Clock) -> None:
        self._clock = clock
        self._window = timedelta(minutes=settings.lockout_minutes)
        self._account_threshold = settings.lockout_threshold
        self._address_threshold = settings.lockout_address_threshold

    def locked(self, session: Session, *keys: str) -> bool:
        """Whether any of ``keys`` is locked now."""
        now = self._clock.now()
        for key in keys:
            row = session.get(LoginThrottle, key)
            if row is not None and row.locked_until is not None and row.locked_until > now:
                return True
        return False

    def failure(self, session: Session, *keys: str) -> bool:
        """Count a failure against each key; True if one of them is now locked."""
        return any([self._count(session, key) for key in keys])

    def success(self, session: Session, key: str) -> None:
        """Forget the failures of ``key`` (an account that just logged in)."""
        row = session.get(LoginThrottle, key)
        if row is not None:
            session.delete(row)

    def _count(self, session: Session, key: str) -> bool:
        now = self._clock.now()
        row = session.get(LoginThrottle, key)
        if row is None:
            row = LoginThrottle(key=key, failures=0, window_start=now)
            session.add(row)
        if self._expired(row, now):
            row.failures, row.window_start, row.locked_until = 0, now, None
        row.failures += 1
        if row.failures >= self._threshold(key):
            row.locked_until, row.failures, row.window_start = now + self._window, 0, now
            return True
        return False

    def _expired(self, row: LoginThrottle, now: datetime) -> bool:
        if row.locked_until is not None:
            return row.locked_until <= now
        return row.window_start + self._window <= now

    def _threshold(self, key: str) -> int:
        return self._account_threshold if key.startswith("acct:") else self._address_threshold
