"""A real browser through the login: set password, enrol TOTP, administer, log in again.

The app is served by uvicorn in a thread on a free port (plain http, so the
session cookie is configured without Secure) and driven with Debian's
Chromium through Playwright. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import pyotp
import pytest

from tests.services.auth_env import TOTP_STEP
from tests.services.browser import Served, log_in, shot
from vault.admin import create_user, get_or_create_organisation

pytestmark = pytest.mark.browser

PASSWORD = "a passphrase typed in a browser"


def _invite_admin(served: Served) -> str:
    vault = served.auth.vault
    with vault.catalog.session() as session:
        org = get_or_create_organisation(session, "Maker", kind="manufacturer")
        user = create_user(session, "admin@maker.example", "admin", org)
        return served.auth.links.issue(session, user.id, "invite")


def _shot(page: object, name: str) -> None:
    shot(page, f"login-{name}")


def _set_password_and_log_in(page: object, served: Served, token: str) -> None:
    """The invitation link's password form, then the login that leads to enrolment."""
    page.goto(f"{served.url}/set-password#{token}")  # type: ignore[attr-defined]
    page.fill("#password", PASSWORD)  # type: ignore[attr-defined]
    page.fill("#password-confirm", PASSWORD)  # type: ignore[attr-defined]
    page.click("#set-password")  # type: ignore[attr-defined]
    page.fill("#email", "admin@maker.example")  # type: ignore[attr-defined]
    page.fill("#password", PASSWORD)  # type: ignore[attr-defined]
    page.click("#login")  # type: ignore[attr-defined]
    page.wait_for_url(f"{served.url}/enrol")  # type: ignore[attr-defined]


class TestBrowserLogin:
    def test_invitation_enrolment_admin_page_and_second_login(
        self, served: Served, browser: object
    ) -> None:
        token = _invite_admin(served)
        page = browser.new_page()  # type: ignore[attr-defined]
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))

        page.goto(f"{served.url}/set-password#{token}")
        assert page.url == f"{served.url}/set-password"  # the script removed the fragment
        page.fill("#password", PASSWORD)
        page.fill("#password-confirm", PASSWORD)
        _shot(page, "1-set-password")
        page.click("#set-password")
        assert "Password set" in page.inner_text("[role=status]")

        page.fill("#email", "admin@maker.example")
        page.fill("#password", PASSWORD)
        page.click("#login")
        page.wait_for_url(f"{served.url}/enrol")
        assert page.locator(".qr svg").count() == 1
        _shot(page, "2-enrol")
        secret = page.inner_text("#totp-secret").replace(" ", "")
        page.fill("#code", pyotp.TOTP(secret).at(served.clock.now()))
        page.click("#confirm")
        page.wait_for_url(f"{served.url}/")
        assert page.inner_text("#whoami") == "admin@maker.example"

        page.goto(f"{served.url}/admin")
        page.fill("#new-user input[name=email]", "surgeon@hospital.example")
        page.select_option("#new-user select[name=role]", "clinician")
        page.click("#new-user button")
        assert "/set-password#" in page.inner_text("#one-time-link")
        _shot(page, "3-admin")

        page.click("#logout")
        page.wait_for_url(f"{served.url}/login")
        served.clock.advance(TOTP_STEP)
        log_in(page, served.url, "admin@maker.example", PASSWORD, secret, served.clock.now())
        _shot(page, "4-home")
        cookie = next(c for c in page.context.cookies() if c["name"] == "vault_session")
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert [text for text in console if "Content Security Policy" in text] == []

    def test_password_alone_does_not_get_in(self, served: Served, browser: object) -> None:
        token = _invite_admin(served)
        page = browser.new_page()  # type: ignore[attr-defined]
        _set_password_and_log_in(page, served, token)
        page.goto(f"{served.url}/admin")
        assert page.url == f"{served.url}/login"
