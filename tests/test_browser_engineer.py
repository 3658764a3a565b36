"""A real browser on the engineer page: log in, see the study's thumbnails, download its ZIP.

The app is served by uvicorn in a thread on a free port (plain http, session
cookie without Secure) on an embedded vault holding one pseudonymised study of
the planted-marker patient, and driven with Debian's Chromium through
Playwright. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pydicom
import pytest

from tests.deidentify_support import leaks
from tests.engineer_support import ingest, pseudonymise
from tests.services.browser import Served, log_in, shot
from tests.services.vault_env import make_case
from tests.test_engineer_page import PATIENT, assign_user, original_uids, planted_study
from vault.admin import create_user, get_or_create_organisation
from vault.auth import totp

pytestmark = pytest.mark.browser

EMAIL = "engineer@maker.example"
PASSWORD = "an engineer's passphrase in a browser"


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
        log_in(page, served.url, EMAIL, PASSWORD, secret, served.clock.now())
        page.click("#engineer-link")
        page.wait_for_url(f"{served.url}/engineer")

        card = page.locator(f"#study-{study}")
        images = card.locator("img")
        assert images.count() == 2
        for index in range(images.count()):
            handle = images.nth(index).element_handle()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=handle)
        shot(page, "engineer-1-page")
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
