"""API tokens for tools: scoped, expiring, revocable, digest only.

A token is ``dvt_`` and 256 random bits, shown once at creation and sent as
``Authorization: Bearer <token>``. Its scope names what it may do: an
engineer's ``read:pseudonymised`` (on one case or on every case assigned to
its owner) or an administrator's ``metrics`` (a Prometheus scraper reading
``GET /metrics`` and nothing else). Which role holds which scope is decided in
:mod:`vault.auth.permissions`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vault.auth.digests import digest, new_secret
from vault.auth.permissions import SCOPE_CASE_ACTIONS, SCOPE_PERMISSIONS, may_hold_scope
from vault.auth.sessions import TOUCH_EVERY
from vault.catalog.accounts import ROLES, ApiToken, User
from vault.clock import Clock
from vault.errors import InvalidInput, NotFound
from vault.settings import AuthSettings

TOKEN_PREFIX = "dvt_"  # noqa: S105 (a type prefix, not a secret)
SCOPES = tuple(SCOPE_PERMISSIONS)


class Tokens:
    """Issues, resolves and revokes API tokens."""

    def __init__(self, settings: AuthSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock

    def issue(
        self,
        session: Session,
        user: User,
        *,
        name: str,
        scope: str = "read:pseudonymised",
        case_id: str | None = None,
        days: int | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token of ``user``; returns its record and the secret (shown once).

        Raises:
            InvalidInput: unknown scope, bad lifetime, a case given to a scope
                that reads no case, or a user who may not hold tokens of ``scope``.
        """
        days = days or self._settings.token_default_days
        if scope not in SCOPES:
            raise InvalidInput("unknown token scope")
        if not 0 < days <= self._settings.token_max_days:
            raise InvalidInput(f"a token lives 1 to {self._settings.token_max_days} days")
        if case_id is not None and not SCOPE_CASE_ACTIONS.get(scope):
            raise InvalidInput(f"a {scope} token is not limited to a case")
        if user.disabled or not may_hold_scope(user.role, scope):
            holders = " or ".join(role for role in ROLES if may_hold_scope(role, scope))
            raise InvalidInput(f"only an active {holders} holds {scope} tokens")
        secret = new_secret(TOKEN_PREFIX)
        now = self._clock.now()
        token = ApiToken(
            user_id=user.id,
            name=name.strip()[:80] or "token",
            token_hash=digest(secret),
            scope=scope,
            case_id=case_id,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        session.add(token)
        session.flush()
        return token, secret

    def resolve(
        self, session: Session, secret: str, *, touch: bool = True
    ) -> tuple[ApiToken, User] | None:
        """The live token for ``secret`` and its owner; None if unknown, expired,
        revoked, or its owner is disabled. With ``touch``, ``last_used_at`` is
        refreshed when older than :data:`~vault.auth.sessions.TOUCH_EVERY`."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(secret)))
        if token is None or token.revoked_at is not None:
            return None
        now = self._clock.now()
        user = session.get(User, token.user_id)
        if token.expires_at <= now or user is None or user.disabled:
            return None
        if touch and self.touch_due(token):
            token.last_used_at = now
        return token, user

    def touch_due(self, token: ApiToken) -> bool:
        """Whether ``token``'s ``last_used_at`` is to be refreshed now."""
        last = token.last_used_at
        return last is None or self._clock.now() - last >= TOUCH_EVERY

    def revoke(self, session: Session, token_id: str, *, owner_id: str | None = None) -> ApiToken:
        """Revoke token ``token_id`` (only among ``owner_id``'s, when given).

        Raises:
            NotFound: no such token (or not the owner's).
        """
        token = session.get(ApiToken, token_id)
        if token is None or (owner_id is not None and token.user_id != owner_id):
            raise NotFound("no such token")
        if token.revoked_at is None:
            token.revoked_at = self._clock.now()
        return token

    def revoke_all(self, session: Session, user_id: str) -> None:
        """Revoke every live token of ``user_id``."""
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=self._clock.now())
        )

    def of_user(self, session: Session, user_id: str) -> list[ApiToken]:
        query = select(ApiToken).where(ApiToken.user_id == user_id)
        return list(session.scalars(query.order_by(ApiToken.created_at.desc())))
