"""Browser sessions: cookie secrets, server-side records, time-outs, CSRF tokens.

The cookie carries a random secret; the catalog keeps its SHA-256 only. A
session is ``totp`` or ``enrol`` (password accepted, second factor awaited,
short-lived) or ``full``. Full sessions end after ``session_idle_minutes``
without a request or ``session_absolute_hours`` after login, whichever comes
first; an expired session is deleted when next seen, and the daily purge
(:meth:`SessionStore.purge_expired`, run by :mod:`vault.daily_jobs`) deletes
those whose cookie never came back, with the address they were opened from.
Passing the second factor replaces the pending session with a new id (no
fixation).

The CSRF token of a session is an HMAC of its cookie secret: bound to the
session, unguessable without the cookie, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, or_
from sqlalchemy.orm import Session

from vault.auth.digests import digest, new_secret, same
from vault.catalog.accounts import LoginSession
from vault.clock import Clock
from vault.settings import AuthSettings

PENDING_STAGES = ("totp", "enrol")
# Refresh ``last_seen_at`` (and a token's ``last_used_at``) at most this often:
# most requests then only read the catalog, and never wait for its write lock.
TOUCH_EVERY = timedelta(seconds=30)


def cookie_name(settings: AuthSettings) -> str:
    """``__Host-`` cookies must be Secure, host-only and path /; browsers enforce it."""
    return "__Host-vault_session" if settings.cookie_secure else "vault_session"


def csrf_token(cookie_secret: str) -> str:
    """The synchronizer token of the session whose cookie holds ``cookie_secret``."""
    return hmac.new(cookie_secret.encode(), b"dicom-vault csrf v1", hashlib.sha256).hexdigest()


def csrf_matches(cookie_secret: str, submitted: str | None) -> bool:
    return submitted is not None and same(csrf_token(cookie_secret), submitted)


class SessionStore:
    """Creates, finds (enforcing time-outs) and ends sessions."""

    def __init__(self, settings: AuthSettings, clock: Clock) -> None:
        self._clock = clock
        self._idle = timedelta(minutes=settings.session_idle_minutes)
        self._absolute = timedelta(hours=settings.session_absolute_hours)
        self._pending = timedelta(minutes=settings.pending_login_minutes)

    def start(self, session: Session, user_id: str, stage: str, remote: str | None) -> str:
        """A new session for ``user_id``; returns the cookie secret (shown once)."""
        secret = new_secret()
        now = self._clock.now()
        session.add(
            LoginSession(
                id=digest(secret),
                user_id=user_id,
                stage=stage,
                created_at=now,
                last_seen_at=now,
                remote=(remote or "")[:64] or None,
            )
        )
        session.flush()
        return secret

    def lookup(self, session: Session, cookie_secret: str) -> LoginSession | None:
        """The session row of ``cookie_secret`` as stored, live or not (read only)."""
        return session.get(LoginSession, digest(cookie_secret))

    def needs_write(self, row: LoginSession) -> bool:
        """Whether :meth:`find` would change ``row``: expired, or its last-seen time due."""
        now = self._clock.now()
        return self._expired(row, now) or now - row.last_seen_at >= TOUCH_EVERY

    def find(self, session: Session, cookie_secret: str) -> LoginSession | None:
        """The live session for ``cookie_secret``; expired ones are deleted."""
        row = self.lookup(session, cookie_secret)
        if row is None:
            return None
        now = self._clock.now()
        if self._expired(row, now):
            session.delete(row)
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            row.last_seen_at = now
        return row

    def end(self, session: Session, cookie_secret: str) -> None:
        """Delete the session of ``cookie_secret`` (logout)."""
        session.execute(delete(LoginSession).where(LoginSession.id == digest(cookie_secret)))

    def end_all(self, session: Session, user_id: str) -> None:
        """Delete every session of ``user_id`` (disabled account, new password)."""
        session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))

    def purge_expired(self, session: Session) -> int:
        """Delete every session past its time-out, seen again or not; how many."""
        result = session.execute(delete(LoginSession).where(self._expired_rows()))
        return int(result.rowcount or 0)

    def _expired_rows(self) -> ColumnElement[bool]:
        """The SQL form of :meth:`_expired`, for the purge."""
        now = self._clock.now()
        pending = LoginSession.stage.in_(PENDING_STAGES)
        return or_(
            pending & (LoginSession.created_at <= now - self._pending),
            ~pending
            & (
                (LoginSession.created_at <= now - self._absolute)
                | (LoginSession.last_seen_at <= now - self._idle)
            ),
        )

    def _expired(self, row: LoginSession, now: object) -> bool:
        if row.stage in PENDING_STAGES:
            return row.created_at + self._pending <= now
        return row.created_at + self._absolute <= now or row.last_seen_at + self._idle <= now
