"""Debian's Chromium through Playwright: the browser tests' shared pieces.

The ``browser`` fixture launches Chromium (skipped locally, failing under
CI=true, where it is not installed); the ``served`` fixture runs the app on
an embedded vault (FrozenClock, session cookie without Secure, since it is
plain http) under a real uvicorn server. :func:`log_in` types the
password-and-TOTP login; :func:`shot` saves a screenshot in
``test-artifacts/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyotp
import pytest

from tests.services._require import missing_service
from tests.services.auth_env import START, auth_test_settings
from tests.services.http_server import serving_app
from vault.api.app import create_app
from vault.auth.login import Authenticator
from vault.clock import FrozenClock

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Served:
    """The app's base URL, its authenticator (and so its vault) and its clock."""

    url: str
    auth: Authenticator
    clock: FrozenClock


@pytest.fixture
def browser() -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        missing_service("chromium", f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    clock = FrozenClock(START)
    app = create_app(auth_test_settings(tmp_path / "data", cookie_secure=False), clock=clock)
    with serving_app(app) as url:
        yield Served(url, Authenticator(app.state.vault), clock)


def shot(page: object, name: str) -> None:
    """A full-page screenshot as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def log_in(
    page: object, url: str, email: str, password: str, secret: str, at: datetime | None = None
) -> None:
    """Password, then the TOTP code of ``secret`` (at ``at``, else now), up to the home page."""
    page.fill("#email", email)  # type: ignore[attr-defined]
    page.fill("#password", password)  # type: ignore[attr-defined]
    page.click("#login")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/login/totp")  # type: ignore[attr-defined]
    code = pyotp.TOTP(secret)
    page.fill("#code", code.now() if at is None else code.at(at))  # type: ignore[attr-defined]
    page.click("#verify")  # type: ignore[attr-defined]
    page.wait_for_url(f"{url}/")  # type: ignore[attr-defined]
