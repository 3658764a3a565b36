"""The login flows: password, TOTP (with enrolment), one-time links, logout.

:class:`Authenticator` ties the pieces together for the web routes and the
CLI. Each step runs in one catalog transaction and *returns* its outcome, so
that failure counters and access-log records are committed even when the
login is refused. Every login, failed login, lock-out, enrolment, password
change and logout is recorded in the access log, without secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.audit import AuditRecord
from vault.auth import totp
from vault.auth.links import Links
from vault.auth.passwords import Passwords
from vault.auth.permissions import Principal
from vault.auth.sessions import SessionStore
from vault.auth.throttle import Throttle, account_key, address_key
from vault.auth.tokens import Tokens
from vault.catalog.accounts import ApiToken, LoginSession, User
from vault.core import Vault


@dataclass(frozen=True)
class Outcome:
    """The result of a login step: a new cookie secret, or why not."""

    cookie: str | None = None
    stage: str | None = None
    refusal: str | None = None  # "credentials", "locked", "code", "expired"


@dataclass(frozen=True)
class Enrolment:
    secret: str
    uri: str


class Authenticator:
    """The authentication front door of one vault."""

    def __init__(self, vault: Vault) -> None:
        auth = vault.settings.auth
        self.vault = vault
        self.passwords = Passwords(auth)
        self.sessions = SessionStore(auth, vault.clock)
        self.tokens = Tokens(auth, vault.clock)
        self.links = Links(vault.settings, vault.clock)
        self.throttle = Throttle(auth, vault.clock)
        self.sealer = totp.TotpSealer(vault.keyring.provider.mac_key(totp.SEAL_PURPOSE))

    # --- password step ---------------------------------------------------

    def password_step(self, email: str, password: str, remote: str | None) -> Outcome:
        """Check e-mail and password; on success a pending session (TOTP or enrolment).

        Three steps, so that the slow password hash runs in no transaction
        (on SQLite, a write transaction holds the whole catalog): the attempt
        is counted first (:meth:`Throttle.attempt`, which no number of
        parallel guesses gets past), then the password is checked, then the
        outcome is written.
        """
        keys = (account_key(email), address_key(remote))
        with self.vault.catalog.session() as session:
            if not self.throttle.attempt(session, *keys):
                self._record(session, "anonymous", "auth.login", "refused-locked", remote)
                return Outcome(refusal="locked")
            user = session.scalar(select(User).where(User.email == email.strip().lower()))
            user_id, stored = (user.id, user.password_hash) if user is not None else (None, None)
        right = self.passwords.verify(stored, password)
        rehashed = self._rehash(stored, password) if right else None
        with self.vault.catalog.session() as session:
            user = session.get(User, user_id) if user_id is not None else None
            if not right or user is None or user.disabled:
                return self._fail(session, user, keys, remote, "credentials", counted=True)
            self.throttle.not_a_failure(session, *keys)
            if rehashed is not None and user.password_hash == stored:
                user.password_hash = rehashed
            stage = "totp" if user.totp_confirmed_at is not None else "enrol"
            cookie = self.sessions.start(session, user.id, stage, remote)
            self._record(session, f"user:{user.id}", "auth.password", "success", remote)
            return Outcome(cookie=cookie, stage=stage)

    def _fail(
        self,
        session: Session,
        user: User | None,
        keys: tuple[str, str],
        remote: str | None,
        why: str,
        *,
        counted: bool = False,
    ) -> Outcome:
        """Refuse, recording the failure; ``counted``: :meth:`Throttle.attempt` counted it."""
        actor = f"user:{user.id}" if user is not None else "anonymous"
        # The counters' rows before the access log's, in every path: on
        # PostgreSQL, two orders of taking them would deadlock.
        throttle = self.throttle
        locked = (throttle.confirm_failure if counted else throttle.failure)(session, *keys)
        self._record(session, actor, "auth.login", f"failure-{why}", remote)
        if locked:
            self._record(session, actor, "auth.lockout", "locked", remote)
        return Outcome(refusal=why)

    def _rehash(self, stored: str | None, password: str) -> str | None:
        """A new hash of ``password`` if ``stored`` was made with older parameters."""
        if stored and self.passwords.needs_rehash(stored):
            return self.passwords.hash(password)
        return None

    # --- second factor ---------------------------------------------------

    def totp_step(self, cookie: str, code: str, remote: str | None) -> Outcome:
        """Check the TOTP code of a ``totp`` session; on success a new full session."""
        with self.vault.catalog.session() as session:
            pending, user = self._pending(session, cookie, "totp")
            if pending is None or user is None:
                return Outcome(refusal="expired")
            keys = (account_key(user.email), address_key(remote))
            if self.throttle.locked(session, *keys):
                self._record(session, f"user:{user.id}", "auth.login", "refused-locked", remote)
                return Outcome(refusal="locked")
            if not self._accept_code(user, code):
                return self._fail(session, user, keys, remote, "code")
            return self._complete(session, cookie, user, keys[0], remote)

    def enrolment(self, cookie: str) -> Enrolment | None:
        """The TOTP secret being enrolled by an ``enrol`` session (made on first call)."""
        with self.vault.catalog.session() as session:
            pending, user = self._pending(session, cookie, "enrol")
            if pending is None or user is None:
                return None
            if user.totp_sealed is None:
                user.totp_sealed = self.sealer.seal(user.id, totp.new_secret())
            secret = self.sealer.open(user.id, user.totp_sealed)
            return Enrolment(secret, totp.provisioning_uri(secret, user.email))

    def confirm_enrolment(self, cookie: str, code: str, remote: str | None) -> Outcome:
        """Confirm enrolment with a first code; on success a new full session."""
        with self.vault.catalog.session() as session:
            pending, user = self._pending(session, cookie, "enrol")
            if pending is None or user is None or user.totp_sealed is None:
                return Outcome(refusal="expired")
            keys = (account_key(user.email), address_key(remote))
            if self.throttle.locked(session, *keys):
                return Outcome(refusal="locked")
            if not self._accept_code(user, code):
                return self._fail(session, user, keys, remote, "code")
            user.totp_confirmed_at = self.vault.clock.now()
            self._record(session, f"user:{user.id}", "auth.totp-enrol", "success", remote)
            return self._complete(session, cookie, user, keys[0], remote)

    def _pending(
        self, session: Session, cookie: str, stage: str
    ) -> tuple[LoginSession | None, User | None]:
        row = self.sessions.find(session, cookie)
        if row is None or row.stage != stage:
            return None, None
        # Held to the end of the transaction: two codes sent at once for one
        # account are checked one after the other, so a code is used once.
        user = session.get(User, row.user_id, with_for_update=True)
        return (row, user) if user is not None and not user.disabled else (None, None)

    def _accept_code(self, user: User, code: str) -> bool:
        if user.totp_sealed is None:
            return False
        secret = self.sealer.open(user.id, user.totp_sealed)
        step = totp.accepted_step(secret, code, self.vault.clock.now(), user.totp_last_step)
        if step is None:
            return False
        user.totp_last_step = step
        return True

    def _complete(
        self, session: Session, cookie: str, user: User, key: str, remote: str | None
    ) -> Outcome:
        self.sessions.end(session, cookie)
        self.throttle.success(session, key)
        user.last_login_at = self.vault.clock.now()
        full = self.sessions.start(session, user.id, "full", remote)
        self._record(session, f"user:{user.id}", "auth.login", "success", remote)
        return Outcome(cookie=full, stage="full")

    # --- one-time links and logout -----------------------------------------

    def set_password(self, link_token: str, password: str, remote: str | None) -> bool:
        """Set a password through a one-time link; False if the link is not valid.

        Raises:
            InvalidInput: the password breaks the policy (the link stays usable).
        """
        new_hash = self.passwords.hash(password)
        with self.vault.catalog.session() as session:
            link = self.links.consume(session, link_token)
            user = session.get(User, link.user_id) if link is not None else None
            if link is None or user is None:
                self._record(session, "anonymous", "auth.password-set", "failure-link", remote)
                return False
            had_password = bool(user.password_hash)
            user.password_hash = new_hash
            self.sessions.end_all(session, user.id)
            if had_password:  # whoever knew the old one may have made tokens: they go too
                self.tokens.revoke_all(session, user.id)
            self._record(session, f"user:{user.id}", "auth.password-set", "success", remote)
            return True

    def logout(self, cookie: str, principal: Principal, remote: str | None) -> None:
        """End the session of ``cookie`` on the server."""
        with self.vault.catalog.session() as session:
            self.sessions.end(session, cookie)
            self._record(session, principal.actor, "auth.logout", "success", remote)

    # --- principals --------------------------------------------------------

    def from_cookie(self, cookie: str) -> Principal | None:
        """The principal of a live session cookie (any stage), or None.

        Read only, unless the session expired or its last-seen time is due:
        most requests never take the catalog's write lock (on SQLite, one
        for the whole database, which ingest commits hold while they sync).
        """
        with self.vault.catalog.read_session() as session:
            row = self.sessions.lookup(session, cookie)
            if row is None:
                return None
            if not self.sessions.needs_write(row):
                return _session_principal(session, row)
        with self.vault.catalog.session() as session:
            found = self.sessions.find(session, cookie)
            return _session_principal(session, found) if found is not None else None

    def from_bearer(self, secret: str) -> Principal | None:
        """The principal of a live API token, or None (read only, as :meth:`from_cookie`)."""
        with self.vault.catalog.read_session() as session:
            found = self.tokens.resolve(session, secret, touch=False)
            if found is None:
                return None
            if not self.tokens.touch_due(found[0]):
                return _token_principal(*found)
        with self.vault.catalog.session() as session:
            found = self.tokens.resolve(session, secret)
            return _token_principal(*found) if found is not None else None

    def _record(
        self, session: Session, actor: str, action: str, outcome: str, remote: str | None
    ) -> None:
        record = AuditRecord(actor, action, outcome, object_type="auth", remote=remote)
        self.vault.audit.record(record, session=session)


def _session_principal(session: Session, row: LoginSession) -> Principal | None:
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return Principal(user.id, user.organisation_id, user.role, "session", row.stage)


def _token_principal(token: ApiToken, user: User) -> Principal:
    return Principal(
        user.id,
        user.organisation_id,
        user.role,
        "token",
        token_id=token.id,
        scope=token.scope,
        token_case_id=token.case_id,
    )
