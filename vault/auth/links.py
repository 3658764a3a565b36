"""One-time links: invitations (set a first password) and password resets.

An administrator (page or CLI) issues a link; its token is random, kept only
as a digest, expires after ``link_valid_hours`` and works once. Issuing a new
link for a user voids that user's earlier unused ones. The token travels in
the URL *fragment* (``/set-password#<token>``), which browsers never send to
the server, so it appears in no access log and no Referer header; the page's
script moves it into the form.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from vault.auth.digests import digest, new_secret
from vault.catalog.accounts import OneTimeLink
from vault.clock import Clock
from vault.settings import Settings

PURPOSES = ("invite", "reset")


def base_url(settings: Settings) -> str:
    """The address people use to reach the service."""
    if settings.api.public_url:
        return settings.api.public_url.rstrip("/")
    # The API itself speaks plain HTTP (TLS ends at the proxy, which sets public_url).
    return f"http://{settings.api.host}:{settings.api.port}"


def link_url(settings: Settings, token: str) -> str:
    return f"{base_url(settings)}/set-password#{token}"


class Links:
    """Issues and consumes one-time links."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._valid = timedelta(hours=settings.auth.link_valid_hours)
        self._clock = clock

    def issue(self, session: Session, user_id: str, purpose: str) -> str:
        """A new link token for ``user_id`` (shown once); earlier ones are voided."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown link purpose {purpose!r}")
        now = self._clock.now()
        session.execute(
            update(OneTimeLink)
            .where(OneTimeLink.user_id == user_id, OneTimeLink.used_at.is_(None))
            .values(used_at=now)
        )
        token = new_secret()
        session.add(
            OneTimeLink(
                user_id=user_id,
                purpose=purpose,
                token_hash=digest(token),
                created_at=now,
                expires_at=now + self._valid,
            )
        )
        session.flush()
        return token

    def consume(self, session: Session, token: str) -> OneTimeLink | None:
        """Use the link of ``token``: the link, or None if unknown, used or expired."""
        link = session.scalar(select(OneTimeLink).where(OneTimeLink.token_hash == digest(token)))
        now = self._clock.now()
        if link is None or link.used_at is not None or link.expires_at <= now:
            return None
        link.used_at = now
        return link
