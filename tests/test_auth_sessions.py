"""Browser sessions: cookie attributes, time-outs, logout, CSRF refusal, read-only look-ups."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pyotp
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.services.auth_env import (
    BASE_URL,
    PASSWORD,
    START,
    AuthWorld,
    auth_test_settings,
    post_form,
    post_login,
)
from vault.api.app import create_app
from vault.auth import Permission, Principal, require
from vault.auth.digests import digest
from vault.auth.sessions import TOUCH_EVERY, csrf_token
from vault.catalog.accounts import ApiToken, LoginSession, User
from vault.clock import FrozenClock
from vault.errors import VaultError, http_status


def _set_cookie_header(response: object, name: str) -> str:
    headers = response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
    return next(h for h in headers if h.startswith(f"{name}="))


class TestSessionCookie:
    def test_cookie_is_host_only_httponly_secure_and_strict(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        response = post_login(auth_world.client, account.email, "correct horse battery staple")
        header = _set_cookie_header(response, "__Host-vault_session").lower()
        for attribute in ("httponly", "secure", "samesite=strict", "path=/"):
            assert attribute in header
        assert "domain=" not in header

    def test_the_login_forms_nonce_cookie_is_host_only_too(self, auth_world: AuthWorld) -> None:
        response = auth_world.client.get("/login")
        header = _set_cookie_header(response, "__Host-vault_form").lower()
        for attribute in ("httponly", "secure", "samesite=strict", "path=/"):
            assert attribute in header
        assert "domain=" not in header

    def test_cookie_without_secure_when_configured_for_plain_http(self, tmp_path: Path) -> None:
        settings = auth_test_settings(tmp_path / "data", cookie_secure=False)
        with TestClient(create_app(settings, clock=FrozenClock(START))) as client:
            world = AuthWorld(client, FrozenClock(START))
            account = world.add_user("c@a.example", "clinician")
            response = post_login(client, account.email, "correct horse battery staple")
        header = _set_cookie_header(response, "vault_session").lower()
        assert "secure" not in header
        assert "httponly" in header and "samesite=strict" in header

    def test_catalog_holds_only_the_digest_of_the_session_id(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.login(auth_world.client, account)
        cookie = auth_world.client.cookies.get(auth_world.cookie_name)
        with auth_world.vault.catalog.session() as session:
            ids = [row.id for row in session.query(LoginSession)]
        assert ids == [digest(cookie)]


class TestSessionTimeouts:
    def test_idle_session_expires(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.client.cookies.set(auth_world.cookie_name, auth_world.session_cookie(account))
        idle = timedelta(minutes=auth_world.vault.settings.auth.session_idle_minutes)
        auth_world.clock.advance(idle - timedelta(seconds=1))
        assert auth_world.client.get("/api/me").status_code == 200
        auth_world.clock.advance(idle)
        assert auth_world.client.get("/api/me").status_code == 401

    def test_activity_keeps_the_session_alive_until_the_absolute_limit(
        self, auth_world: AuthWorld
    ) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        cookie = auth_world.session_cookie(account)
        auth_world.client.cookies.set(auth_world.cookie_name, cookie)
        settings = auth_world.vault.settings.auth
        step = timedelta(minutes=settings.session_idle_minutes - 1)
        elapsed = timedelta()
        while elapsed + step < timedelta(hours=settings.session_absolute_hours):
            auth_world.clock.advance(step)
            elapsed += step
            assert auth_world.client.get("/api/me").status_code == 200
        auth_world.clock.advance(timedelta(hours=settings.session_absolute_hours) - elapsed)
        assert auth_world.client.get("/api/me").status_code == 401

    def test_expired_session_is_deleted_from_the_catalog(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.client.cookies.set(auth_world.cookie_name, auth_world.session_cookie(account))
        auth_world.clock.advance(timedelta(hours=13))
        auth_world.client.get("/api/me")
        with auth_world.vault.catalog.session() as session:
            assert session.query(LoginSession).count() == 0

    def test_pending_login_expires_before_the_code_is_entered(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        post_login(auth_world.client, account.email, "correct horse battery staple")
        minutes = auth_world.vault.settings.auth.pending_login_minutes
        auth_world.clock.advance(timedelta(minutes=minutes))
        code = pyotp.TOTP(account.totp_secret).at(auth_world.clock.now())
        response = post_form(auth_world.client, "/login/totp", {"code": code})
        assert (response.status_code, response.headers["location"]) == (303, "/login")
        assert auth_world.client.get("/api/me").status_code == 401


class TestLogout:
    def test_logout_deletes_the_server_side_session(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.login(auth_world.client, account)
        cookie = auth_world.client.cookies.get(auth_world.cookie_name)
        assert post_form(auth_world.client, "/logout", {}).status_code == 303
        with auth_world.vault.catalog.session() as session:
            assert session.get(LoginSession, digest(cookie)) is None
        replay = auth_world.new_client()
        replay.cookies.set(auth_world.cookie_name, cookie)
        assert replay.get("/api/me").status_code == 401

    def test_a_login_half_way_can_be_cancelled(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        assert post_login(auth_world.client, account.email, PASSWORD).status_code == 303
        pending = auth_world.client.cookies.get(auth_world.cookie_name)
        assert auth_world.client.get("/login/totp").status_code == 200
        cancelled = post_form(auth_world.client, "/login/cancel", {})
        assert (cancelled.status_code, cancelled.headers["location"]) == (303, "/login")
        with auth_world.vault.catalog.session() as session:
            assert session.get(LoginSession, digest(pending)) is None
        replay = auth_world.new_client()
        replay.cookies.set(auth_world.cookie_name, pending)
        assert replay.get("/login/totp", follow_redirects=False).headers["location"] == "/login"

    def test_logout_is_in_the_access_log(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.login(auth_world.client, account)
        post_form(auth_world.client, "/logout", {})
        actors = [(e.actor, e.action) for e in auth_world.vault.audit.events()]
        assert (f"user:{account.user_id}", "auth.logout") in actors


class TestCsrf:
    def test_form_without_token_is_refused(self, auth_world: AuthWorld) -> None:
        admin = auth_world.add_user("admin@maker.example", "admin", "Maker")
        auth_world.login(auth_world.client, admin)
        data = {"name": "Forged Hospital", "kind": "hospital"}
        response = post_form(auth_world.client, "/admin/organisations", data, csrf=False)
        assert response.status_code == 403
        assert response.json()["error"] == "csrf"
        assert "Forged Hospital" not in auth_world.client.get("/admin").text

    def test_token_of_another_session_is_refused(self, auth_world: AuthWorld) -> None:
        admin = auth_world.add_user("admin@maker.example", "admin", "Maker")
        auth_world.login(auth_world.client, admin)
        foreign = csrf_token(auth_world.session_cookie(admin))
        data = {"name": "Forged Hospital", "csrf_token": foreign}
        response = auth_world.client.post("/admin/organisations", data=data)
        assert response.status_code == 403

    def test_logout_without_token_is_refused(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.login(auth_world.client, account)
        assert post_form(auth_world.client, "/logout", {}, csrf=False).status_code == 403
        assert auth_world.client.get("/api/me").status_code == 200

    def test_token_in_header_is_accepted(self, auth_world: AuthWorld) -> None:
        admin = auth_world.add_user("admin@maker.example", "admin", "Maker")
        auth_world.login(auth_world.client, admin)
        cookie = auth_world.client.cookies.get(auth_world.cookie_name)
        response = auth_world.client.post(
            "/admin/organisations",
            data={"name": "Header Hospital"},
            headers={"X-CSRF-Token": csrf_token(cookie)},
            follow_redirects=False,
        )
        assert response.status_code == 303


def _inline_app(world: AuthWorld) -> FastAPI:
    """A small app sharing the world's vault, with one state-changing API route."""
    app = FastAPI()
    app.state.vault = world.vault

    @app.post("/thing")
    def change(principal: Principal = Depends(require(Permission.CASE_READ))) -> dict[str, str]:  # noqa: B008
        return {"by": principal.via}

    @app.exception_handler(VaultError)
    def _handle(_request: object, exc: VaultError) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=http_status(exc))

    return app


class TestCsrfExemptionForApiTokens:
    def test_bearer_token_request_needs_no_csrf_token(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        client = TestClient(_inline_app(auth_world), base_url=BASE_URL)
        headers = {"Authorization": f"Bearer {auth_world.token(engineer)}"}
        response = client.post("/thing", headers=headers)
        assert (response.status_code, response.json()) == (200, {"by": "token"})

    def test_same_route_with_a_cookie_session_needs_the_csrf_token(
        self, auth_world: AuthWorld
    ) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        client = TestClient(_inline_app(auth_world), base_url=BASE_URL)
        cookie = auth_world.session_cookie(engineer)
        client.cookies.set(auth_world.cookie_name, cookie)
        assert client.post("/thing").status_code == 403
        ok = client.post("/thing", headers={"X-CSRF-Token": csrf_token(cookie)})
        assert (ok.status_code, ok.json()) == (200, {"by": "session"})


@contextmanager
def catalog_write_lock_held(world: AuthWorld) -> Iterator[None]:
    """Another writer holding the SQLite catalog's write lock, as an ingest commit does."""
    other = sqlite3.connect(world.vault.catalog.engine.url.database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def _last_seen(world: AuthWorld, cookie: str) -> datetime:
    with world.vault.catalog.read_session() as session:
        row = session.get(LoginSession, digest(cookie))
        assert row is not None
        return row.last_seen_at


class TestIdentifyingACallerReadsOnly:
    """Resolving a cookie or token on every request must not wait for the catalog's write
    lock (on SQLite, one for the whole file, held by every ingest commit while it syncs)."""

    def test_a_live_session_is_resolved_while_another_writer_holds_the_catalog(
        self, auth_world: AuthWorld
    ) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        cookie = auth_world.session_cookie(account)
        auth_world.clock.advance(timedelta(seconds=5))
        with catalog_write_lock_held(auth_world):
            principal = auth_world.auth.from_cookie(cookie)
        assert principal is not None and principal.user_id == account.user_id

    def test_a_live_token_is_resolved_while_another_writer_holds_the_catalog(
        self, auth_world: AuthWorld
    ) -> None:
        engineer = auth_world.add_user("e@m.example", "engineer", "Maker")
        secret = auth_world.token(engineer)
        assert auth_world.auth.from_bearer(secret) is not None  # first use recorded
        auth_world.clock.advance(timedelta(seconds=5))
        with catalog_write_lock_held(auth_world):
            principal = auth_world.auth.from_bearer(secret)
        assert principal is not None and principal.token_id is not None

    def test_last_seen_is_refreshed_once_it_is_due(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        cookie = auth_world.session_cookie(account)
        started = _last_seen(auth_world, cookie)
        auth_world.clock.advance(TOUCH_EVERY - timedelta(seconds=1))
        assert auth_world.auth.from_cookie(cookie) is not None
        assert _last_seen(auth_world, cookie) == started
        auth_world.clock.advance(timedelta(seconds=1))
        assert auth_world.auth.from_cookie(cookie) is not None
        assert _last_seen(auth_world, cookie) == auth_world.clock.now()

    def test_token_last_use_is_recorded_then_refreshed_once_due(
        self, auth_world: AuthWorld
    ) -> None:
        engineer = auth_world.add_user("e@m.example", "engineer", "Maker")
        secret = auth_world.token(engineer)

        def last_used() -> datetime | None:
            with auth_world.vault.catalog.read_session() as session:
                return session.scalars(select(ApiToken.last_used_at)).one()

        assert last_used() is None
        auth_world.auth.from_bearer(secret)
        first = auth_world.clock.now()
        assert last_used() == first
        auth_world.clock.advance(TOUCH_EVERY - timedelta(seconds=1))
        auth_world.auth.from_bearer(secret)
        assert last_used() == first
        auth_world.clock.advance(timedelta(seconds=1))
        auth_world.auth.from_bearer(secret)
        assert last_used() == auth_world.clock.now()

    def test_a_disabled_user_is_refused_on_the_read_only_path(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        cookie = auth_world.session_cookie(account)
        with auth_world.vault.catalog.session() as session:
            user = session.get(User, account.user_id)
            assert user is not None
            user.disabled = True
        assert auth_world.auth.from_cookie(cookie) is None
