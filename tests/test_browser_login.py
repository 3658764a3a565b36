"""A real browser through the login: set password, enrol TOTP, administer, log in again.

The app is served by uvicorn in a thread on a free port (plain http, so the
session cookie is configured without Secure) and driven with Debian's
Chromium through Playwright. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
import uvicorn

from tests.services._require import missing_service
from tests.services.auth_env import START, TOTP_STEP, auth_test_settings
from vault.admin import create_user, get_or_create_organisation
from vault.api.app import create_app
from vault.auth.login import Authenticator
from vault.clock import FrozenClock

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a passphrase typed in a browser"


@dataclass
class Served:
    url: str
    auth: Authenticator
    clock: FrozenClock


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    clock = FrozenClock(START)
    app = create_app(auth_test_settings(tmp_path / "data", cookie_secure=False), clock=clock)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    while thread.is_alive() and not started.wait(0.05):
        if server.started:
            started.set()
    if not server.started:
        pytest.fail("uvicorn did not start")
    try:
        yield Served(f"http://127.0.0.1:{port}", Authenticator(app.state.vault), clock)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@pytest.fixture
def browser() -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        missing_service("chromium", f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _invite_admin(served: Served) -> str:
    vault = served.auth.vault
    with vault.catalog.session() as session:
        org = get_or_create_organisation(session, "Maker", kind="manufacturer")
        user = create_user(session, "admin@maker.example", "admin", org)
        return served.auth.links.issue(session, user.id, "invite")


def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"login-{name}.png"), full_page=True)  # type: ignore[attr-defined]


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
        page.fill("#email", "admin@maker.example")
        page.fill("#password", PASSWORD)
        page.click("#login")
        page.wait_for_url(f"{served.url}/login/totp")
        page.fill("#code", pyotp.TOTP(secret).at(served.clock.now()))
        page.click("#verify")
        page.wait_for_url(f"{served.url}/")
        _shot(page, "4-home")
        cookie = next(c for c in page.context.cookies() if c["name"] == "vault_session")
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert [text for text in console if "Content Security Policy" in text] == []

    def test_password_alone_does_not_get_in(self, served: Served, browser: object) -> None:
        token = _invite_admin(served)
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{served.url}/set-password#{token}")
        page.fill("#password", PASSWORD)
        page.fill("#password-confirm", PASSWORD)
        page.click("#set-password")
        page.fill("#email", "admin@maker.example")
        page.fill("#password", PASSWORD)
        page.click("#login")
        page.wait_for_url(f"{served.url}/enrol")
        page.goto(f"{served.url}/admin")
        assert page.url == f"{served.url}/login"
