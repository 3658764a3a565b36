"""No password, token, session id, CSRF token or TOTP secret in logs or in the catalog.

One whole account life is played through the real pages (invitation link,
password, TOTP enrolment, API token, reset link, logout) while every log record
is captured; then every table of the catalog is dumped, and the catalog's
files are read raw, and none of the secrets that crossed the wire may appear.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import MetaData, select

from tests.services.auth_env import TOTP_STEP, AuthWorld, form_nonce, post_form, post_login
from vault.auth.sessions import csrf_token

NEW_PASSWORD = "a fresh passphrase for the vault"


def _capture(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, pattern
    return match.group(1)


def _account_life(world: AuthWorld) -> list[str]:
    """Play an account's life through the pages; return every secret seen."""
    secrets: list[str] = [NEW_PASSWORD]
    admin = world.add_user("admin@maker.example", "admin", "Maker")
    world.login(world.client, admin)
    secrets.append(world.client.cookies.get(world.cookie_name) or "")
    org_id = admin.organisation_id
    data = {"email": "eng@maker.example", "role": "engineer", "organisation_id": org_id}
    page = post_form(world.client, "/admin/users", data).text
    link = _capture(r'<code id="one-time-link">[^<#]*#([^<]+)</code>', page)
    secrets.append(link)

    browser = world.new_client()
    nonce = form_nonce(browser, "/set-password")
    form = {"token": link, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    browser.post("/set-password", data={**form, "form_nonce": nonce})
    post_login(browser, "eng@maker.example", NEW_PASSWORD)
    secrets.append(browser.cookies.get(world.cookie_name) or "")
    enrol = browser.get("/enrol").text
    totp_secret = _capture(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', enrol).replace(" ", "")
    secrets.append(totp_secret)
    post_form(browser, "/enrol", {"code": pyotp.TOTP(totp_secret).at(world.clock.now())})
    cookie = browser.cookies.get(world.cookie_name) or ""
    secrets += [cookie, csrf_token(cookie)]

    created = post_form(browser, "/account/tokens", {"name": "slicer"}).text
    secrets.append(_capture(r'<code id="new-token">([^<]+)</code>', created))
    browser.get("/api/me", headers={"Authorization": f"Bearer {secrets[-1]}"})

    user_id = _capture(r'action="/admin/users/([0-9a-f]+)/reset"', world.client.get("/admin").text)
    reset = post_form(world.client, f"/admin/users/{user_id}/reset", {}).text
    secrets.append(_capture(r'<code id="one-time-link">[^<#]*#([^<]+)</code>', reset))
    post_login(world.new_client(), "eng@maker.example", "a wrong password attempt")
    world.clock.advance(TOTP_STEP)
    post_form(browser, "/logout", {})
    return [secret for secret in secrets if secret]


def _catalog_dump(world: AuthWorld) -> str:
    metadata = MetaData()
    metadata.reflect(world.vault.catalog.engine)
    parts: list[str] = []
    with world.vault.catalog.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes):
                        parts += [value.hex(), value.decode("latin-1")]
                    else:
                        parts.append(str(value))
    return "\n".join(parts)


@pytest.fixture
def life(auth_world: AuthWorld, caplog: pytest.LogCaptureFixture) -> tuple[list[str], str]:
    caplog.set_level(logging.DEBUG)
    secrets = _account_life(auth_world)
    assert len(secrets) >= 8
    return secrets, caplog.text


class TestNoSecretsInLogs:
    def test_no_secret_appears_in_any_log_record(self, life: tuple[list[str], str]) -> None:
        secrets, logged = life
        assert "/set-password" in logged  # the capture does see the requests
        assert [s for s in secrets if s in logged] == []

    def test_the_password_is_not_in_the_access_log(
        self, auth_world: AuthWorld, life: tuple[list[str], str]
    ) -> None:
        secrets, _ = life
        records = " ".join(
            f"{e.actor} {e.action} {e.outcome} {e.object_id} {e.remote} {e.detail}"
            for e in auth_world.vault.audit.events()
        )
        assert "auth.login" in records
        assert [s for s in secrets if s in records] == []


class TestNoSecretsInTheCatalog:
    def test_no_secret_appears_in_any_table(
        self, auth_world: AuthWorld, life: tuple[list[str], str]
    ) -> None:
        secrets, _ = life
        dump = _catalog_dump(auth_world)
        assert "eng@maker.example" in dump  # the dump does see the tables
        assert [s for s in secrets if s in dump] == []

    def test_no_secret_appears_in_the_catalog_files(
        self, auth_world: AuthWorld, life: tuple[list[str], str]
    ) -> None:
        secrets, _ = life
        url = auth_world.vault.settings.catalog.url or ""
        database = Path(url.removeprefix("sqlite:///"))
        raw = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))
        assert b"eng@maker.example" in raw
        assert [s for s in secrets if s.encode() in raw] == []
