"""Test plugin: the web app on an embedded vault, with accounts to log in as.

``auth_world`` is a running app (lifespan entered) on a temporary embedded
vault with a FrozenClock, cheap argon2 parameters, and helpers to create
users (password set, TOTP enrolled), log in through the real pages, or mint
sessions and tokens directly for tests whose subject is not the login itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient

from vault.admin import create_user, get_or_create_organisation
from vault.api.app import create_app
from vault.auth import totp
from vault.auth.login import Authenticator
from vault.auth.sessions import cookie_name, csrf_token
from vault.catalog.accounts import User
from vault.clock import FrozenClock
from vault.core import Vault
from vault.settings import AuthSettings, Settings

BASE_URL = "https://testserver"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
TOTP_STEP = timedelta(seconds=30)


def auth_test_settings(data_dir: Path, **auth: object) -> Settings:
    options: dict[str, object] = {"password_time_cost": 1, "password_memory_kib": 8}
    options.update(auth)
    return Settings(data_dir=data_dir, auth=AuthSettings(**options))


@dataclass
class Account:
    user_id: str
    email: str
    organisation_id: str
    role: str
    totp_secret: str


class AuthWorld:
    """A running app and the means to make accounts and credentials in it."""

    def __init__(self, client: TestClient, clock: FrozenClock) -> None:
        self.client = client
        self.clock = clock
        self.vault: Vault = client.app.state.vault  # type: ignore[attr-defined]
        self.auth = Authenticator(self.vault)
        self.cookie_name = cookie_name(self.vault.settings.auth)

    def add_user(
        self, email: str, role: str, organisation: str = "Hospital A", *, enrolled: bool = True
    ) -> Account:
        secret = totp.new_secret()
        with self.vault.catalog.session() as session:
            org = get_or_create_organisation(
                session, organisation, kind="manufacturer" if role != "clinician" else "hospital"
            )
            user = create_user(
                session, email, role, org, password_hash=self.auth.passwords.hash(PASSWORD)
            )
            if enrolled:
                user.totp_sealed = self.auth.sealer.seal(user.id, secret)
                user.totp_confirmed_at = self.clock.now()
            return Account(user.id, user.email, org.id, role, secret)

    def session_cookie(self, account: Account, stage: str = "full") -> str:
        """A new server-side session for ``account`` (no login pages involved)."""
        with self.vault.catalog.session() as session:
            return self.auth.sessions.start(session, account.user_id, stage, "testclient")

    def token(
        self,
        account: Account,
        *,
        case_id: str | None = None,
        days: int = 30,
        scope: str = "read:pseudonymised",
    ) -> str:
        with self.vault.catalog.session() as session:
            user = session.get(User, account.user_id)
            assert user is not None
            _, secret = self.auth.tokens.issue(
                session, user, name="test", case_id=case_id, days=days, scope=scope
            )
            return secret

    def new_client(self) -> TestClient:
        """Another browser on the same app (its own cookie jar)."""
        return TestClient(self.client.app, base_url=BASE_URL)

    def logged_in(self, account: Account) -> TestClient:
        """Another browser holding a full session of ``account``."""
        client = self.new_client()
        client.cookies.set(self.cookie_name, self.session_cookie(account))
        return client

    def login(self, client: TestClient, account: Account, password: str = PASSWORD) -> None:
        """Log ``client`` in through the real pages: password, then TOTP code."""
        response = post_login(client, account.email, password)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/login/totp"
        code = pyotp.TOTP(account.totp_secret).at(self.clock.now())
        response = post_form(client, "/login/totp", {"code": code})
        assert response.status_code == 303, response.text
        self.clock.advance(TOTP_STEP)  # the next login needs a fresh code


_NONCE = re.compile(r'name="form_nonce" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def form_nonce(client: TestClient, page: str = "/login") -> str:
    match = _NONCE.search(client.get(page).text)
    assert match, "the page has no form nonce"
    return match.group(1)


def post_login(client: TestClient, email: str, password: str):
    data = {"email": email, "password": password, "form_nonce": form_nonce(client)}
    return client.post("/login", data=data, follow_redirects=False)


def csrf_of(client: TestClient, cookie_name_: str) -> str:
    return csrf_token(client.cookies.get(cookie_name_) or "")


def post_form(client: TestClient, path: str, data: dict[str, str], *, csrf: bool = True):
    """POST ``data`` to ``path`` with the session's CSRF token (unless told not to)."""
    if csrf:
        name = next((c.name for c in client.cookies.jar if "vault_session" in c.name), "")
        data = {**data, "csrf_token": csrf_of(client, name)}
    return client.post(path, data=data, follow_redirects=False)


@pytest.fixture
def auth_world(tmp_path: Path) -> Iterator[AuthWorld]:
    """The app on a fresh embedded vault, secure cookies, https test client."""
    clock = FrozenClock(START)
    app = create_app(auth_test_settings(tmp_path / "data"), clock=clock)
    with TestClient(app, base_url=BASE_URL) as client:
        yield AuthWorld(client, clock)
