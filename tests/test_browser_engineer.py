"""A real browser on the engineer page: log in, see the study's thumbnails, download its ZIP.

The app is served by uvicorn in a thread on a free port (plain http, session
cookie without Secure) on an embedded vault holding one pseudonymised study of
the planted-marker patient, and driven with Debian's Chromium through
Playwright. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pyotp
import pytest
import uvicorn

from tests.deidentify_support import leaks
from tests.services._require import missing_service
from tests.services.auth_env import START, auth_test_settings
from tests.services.vault_env import make_case
from tests.test_browser_login import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.test_engineer_page import (
    PATIENT,
    assign_user,
    ingest,
    original_uids,
    planted_study,
    pseudonymise,
)
from vault.admin import create_user, get_or_create_organisation
from vault.api.app import create_app
from vault.auth import totp
from vault.auth.login import Authenticator
from vault.clock import FrozenClock

pytestmark = pytest.mark.browser

EMAIL = "engineer@maker.example"
PASSWORD = "an engineer's passphrase in a browser"


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


def _engineer(served: Served) -> tuple[str, str]:
    """An engineer with a password and an enrolled TOTP secret: (user id, secret)."""
    secret = totp.new_secret()
    with served.auth.vault.catalog.session() as session:
        org = get_or_create_organisation(session, "Maker", kind="manufacturer")
        password_hash = served.auth.passwords.hash(PASSWORD)
        user = create_user(session, EMAIL, "engineer", org, password_hash=password_hash)
        user.totp_sealed = served.auth.sealer.seal(user.id, secret)
        user.totp_confirmed_at = served.clock.now()
        return user.id, secret


def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"engineer-{name}.png"), full_page=True)  # type: ignore[attr-defined]


class TestBrowserEngineerPage:
    def test_engineer_logs_in_sees_thumbnails_and_downloads_the_study_zip(
        self, served: Served, browser: object, tmp_path: Path
    ) -> None:
        vault = served.auth.vault
        user_id, secret = _engineer(served)
        case = make_case(vault, "BROWSER-CASE-1")
        assign_user(vault, case.case_id, user_id)
        datasets = planted_study(seed=21)
        study = pseudonymise(vault, ingest(case, datasets))

        page = browser.new_page()  # type: ignore[attr-defined]
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"{served.url}/login")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("#login")
        page.wait_for_url(f"{served.url}/login/totp")
        page.fill("#code", pyotp.TOTP(secret).at(served.clock.now()))
        page.click("#verify")
        page.wait_for_url(f"{served.url}/")
        page.click("#engineer-link")
        page.wait_for_url(f"{served.url}/engineer")

        card = page.locator(f"#study-{study}")
        images = card.locator("img")
        assert images.count() == 2
        for index in range(images.count()):
            handle = images.nth(index).element_handle()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=handle)
        _shot(page, "1-page")
        assert leaks(page.content().encode(), PATIENT.markers()) == []

        with page.expect_download() as info:
            card.locator("a.download").click()
        saved = tmp_path / "study.zip"
        info.value.save_as(saved)
        with zipfile.ZipFile(saved) as archive:
            assert archive.testzip() is None
            members = [
                pydicom.dcmread(io.BytesIO(archive.read(name))) for name in archive.namelist()
            ]
        assert len(members) == len(datasets)
        uids = {str(ds.SOPInstanceUID) for ds in members}
        assert all(uid.startswith("2.25.") for uid in uids)
        assert uids.isdisjoint(original_uids(datasets))
        assert [text for text in console if "Content Security Policy" in text] == []
