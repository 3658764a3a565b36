"""Login throttling: lock an account or a client address after repeated failures.

Counters live in the catalog (shared by every API process) under a key per
account (``acct:`` and the SHA-256 of the lower-cased e-mail, so unknown
addresses are counted, and locked, exactly like known ones) and per client
address (``addr:``; an IPv6 client by its /64, which one host can fill with
addresses). Reaching the threshold within the lock-out window locks the key
for the lock-out duration; time comes from the injected clock.

Every read-modify-write of a counter holds its row (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite's write transaction holds the database), so
attempts made at the same moment are all counted. :meth:`Throttle.attempt`
counts an attempt *before* the slow password check, so that no number of
parallel guesses gets past the threshold; :meth:`Throttle.not_a_failure`
takes it back when the password was right.
"""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session

from vault.catalog.accounts import LoginThrottle
from vault.catalog.db import insert_or_ignore
from vault.clock import Clock
from vault.settings import AuthSettings


def account_key(email: str) -> str:
    return "acct:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def address_key(remote: str | None) -> str:
    """The counter key of a client address (``host`` or ``host:port``)."""
    return "addr:" + _client(remote or "unknown")[:64]


def _client(remote: str) -> str:
    if remote.startswith("[") and "]" in remote:  # [v6]:port
        host = remote[1 : remote.index("]")]
    else:  # v4:port, or a bare address
        host = remote.rsplit(":", 1)[0] if remote.count(":") == 1 else remote
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


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

    def attempt(self, session: Session, *keys: str) -> bool:
        """Count an attempt about to be checked, unless a key refuses it.

        A key refuses while locked, or once its failures (those in flight
        included) reach its threshold, which locks it. Returns False, having
        counted nothing, when refused. A counted attempt then ends with
        :meth:`confirm_failure` or :meth:`not_a_failure`.
        """
        now = self._clock.now()
        rows = self._rows(session, keys, now)
        if any([self._refuses(row, now) for row in rows]):
            return False
        for row in rows:
            self._add(row, now)
        return True

    def confirm_failure(self, session: Session, *keys: str) -> bool:
        """An attempt counted by :meth:`attempt` failed: True if a key is now locked."""
        now = self._clock.now()
        reached = [row for row in self._rows(session, keys, now) if self._at_threshold(row)]
        for row in reached:
            self._lock(row, now)
        return bool(reached)

    def not_a_failure(self, session: Session, *keys: str) -> None:
        """Take back an attempt counted by :meth:`attempt` that succeeded."""
        for row in self._rows(session, keys, self._clock.now()):
            row.failures = max(row.failures - 1, 0)

    def failure(self, session: Session, *keys: str) -> bool:
        """Count a failure against each key; True if one of them is now locked."""
        return any([self._count(session, key) for key in keys])

    def success(self, session: Session, key: str) -> None:
        """Forget the failures of ``key`` (an account that just logged in)."""
        row = session.get(LoginThrottle, key, with_for_update=True)
        if row is not None:
            session.delete(row)

    def _held(self, session: Session, key: str, now: datetime) -> LoginThrottle:
        """The counter row of ``key`` (made if new), locked for this transaction."""
        dialect = session.get_bind().dialect.name
        new = insert_or_ignore(LoginThrottle.__table__, dialect, "key")
        session.execute(new.values(key=key, failures=0, window_start=now))
        row = session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
        assert row is not None  # just made, or there already
        return row

    def forget_idle(self, session: Session) -> int:
        """Delete the counters that no longer hold anything (no lock, window over):
        a counter names a client address, which is not kept longer than it serves."""
        now = self._clock.now()
        table = LoginThrottle.__table__
        idle = delete(table).where(
            or_(table.c.locked_until.is_(None), table.c.locked_until <= now),
            table.c.window_start <= now - self._window,
        )
        return int(session.execute(idle).rowcount or 0)  # type: ignore[attr-defined]

    def _rows(self, session: Session, keys: tuple[str, ...], now: datetime) -> list[LoginThrottle]:
        return [self._held(session, key, now) for key in keys]

    def _count(self, session: Session, key: str) -> bool:
        now = self._clock.now()
        row = self._held(session, key, now)
        self._add(row, now)
        if self._at_threshold(row):
            self._lock(row, now)
            return True
        return False

    def _add(self, row: LoginThrottle, now: datetime) -> None:
        if self._expired(row, now):
            row.failures, row.window_start, row.locked_until = 0, now, None
        row.failures += 1

    def _refuses(self, row: LoginThrottle, now: datetime) -> bool:
        if row.locked_until is not None and row.locked_until > now:
            return True
        if not self._expired(row, now) and self._at_threshold(row):
            self._lock(row, now)
            return True
        return False

    def _at_threshold(self, row: LoginThrottle) -> bool:
        return row.failures >= self._threshold(row.key)

    def _lock(self, row: LoginThrottle, now: datetime) -> None:
        row.locked_until, row.failures, row.window_start = now + self._window, 0, now

    def _expired(self, row: LoginThrottle, now: datetime) -> bool:
        if row.locked_until is not None:
            return row.locked_until <= now
        return row.window_start + self._window <= now

    def _threshold(self, key: str) -> int:
        return self._account_threshold if key.startswith("acct:") else self._address_threshold
