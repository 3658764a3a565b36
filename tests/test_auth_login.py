"""Human login: password, TOTP second factor and enrolment, lock-out, one-time links."""

from __future__ import annotations

import re
from datetime import timedelta

import pyotp
import pytest

from tests.services.auth_env import (
    PASSWORD,
    TOTP_STEP,
    AuthWorld,
    form_nonce,
    post_form,
    post_login,
)
from vault.admin import user_by_email
from vault.catalog.accounts import User


def _code(world: AuthWorld, secret: str) -> str:
    return pyotp.TOTP(secret).at(world.clock.now())


class TestPasswordAloneGrantsNothing:
    def test_correct_password_leads_to_the_code_page_not_in(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        response = post_login(auth_world.client, account.email, PASSWORD)
        assert response.status_code == 303
        assert response.headers["location"] == "/login/totp"
        assert auth_world.client.get("/api/me").status_code == 401
        home = auth_world.client.get("/", follow_redirects=False)
        assert (home.status_code, home.headers["location"]) == (303, "/login")

    def test_password_then_code_opens_a_full_session(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.login(auth_world.client, account)
        me = auth_world.client.get("/api/me")
        assert me.status_code == 200
        assert me.json()["user_id"] == account.user_id

    def test_the_session_id_changes_when_the_code_is_accepted(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        post_login(auth_world.client, account.email, PASSWORD)
        pending = auth_world.client.cookies.get(auth_world.cookie_name)
        post_form(
            auth_world.client, "/login/totp", {"code": _code(auth_world, account.totp_secret)}
        )
        assert auth_world.client.cookies.get(auth_world.cookie_name) not in (None, pending)


class TestWrongCredentials:
    def test_wrong_password_is_refused(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        response = post_login(auth_world.client, account.email, "wrong password entirely")
        assert response.status_code == 401
        assert auth_world.cookie_name not in auth_world.client.cookies

    def test_unknown_account_gets_the_same_answer(self, auth_world: AuthWorld) -> None:
        known = auth_world.add_user("c@a.example", "clinician")
        wrong = post_login(auth_world.client, known.email, "wrong password entirely")
        unknown = post_login(auth_world.client, "nobody@a.example", "wrong password entirely")
        assert unknown.status_code == wrong.status_code == 401
        assert _error(unknown.text) == _error(wrong.text)

    def test_wrong_code_is_refused(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        right = _code(auth_world, account.totp_secret)
        post_login(auth_world.client, account.email, PASSWORD)
        wrong = "000000" if right != "000000" else "999999"
        assert post_form(auth_world.client, "/login/totp", {"code": wrong}).status_code == 401
        assert auth_world.client.get("/api/me").status_code == 401

    def test_a_used_code_is_not_accepted_again(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        code = _code(auth_world, account.totp_secret)
        post_login(auth_world.client, account.email, PASSWORD)
        assert post_form(auth_world.client, "/login/totp", {"code": code}).status_code == 303
        other = auth_world.new_client()
        post_login(other, account.email, PASSWORD)
        assert post_form(other, "/login/totp", {"code": code}).status_code == 401

    def test_login_form_without_its_nonce_is_refused(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        form_nonce(auth_world.client)
        data = {"email": account.email, "password": PASSWORD, "form_nonce": "forged"}
        response = auth_world.client.post("/login", data=data, follow_redirects=False)
        assert response.status_code == 403


def _error(page: str) -> str:
    match = re.search(r'<p class="error" role="alert">([^<]*)</p>', page)
    return match.group(1) if match else ""


class TestTotpEnrolment:
    def test_first_login_asks_for_enrolment_with_a_qr_code(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("new@a.example", "engineer", enrolled=False)
        response = post_login(auth_world.client, account.email, PASSWORD)
        assert response.headers["location"] == "/enrol"
        page = auth_world.client.get("/enrol")
        assert page.status_code == 200
        assert "<svg" in page.text
        assert re.search(r'<code id="totp-secret">[A-Z2-7 ]{32,}</code>', page.text)

    def test_enrolment_completes_with_a_code_from_the_shown_secret(
        self, auth_world: AuthWorld
    ) -> None:
        account = auth_world.add_user("new@a.example", "engineer", enrolled=False)
        post_login(auth_world.client, account.email, PASSWORD)
        secret = _shown_secret(auth_world.client.get("/enrol").text)
        response = post_form(auth_world.client, "/enrol", {"code": _code(auth_world, secret)})
        assert response.status_code == 303
        assert auth_world.client.get("/api/me").status_code == 200

    def test_enrolled_secret_is_required_at_the_next_login(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("new@a.example", "engineer", enrolled=False)
        post_login(auth_world.client, account.email, PASSWORD)
        secret = _shown_secret(auth_world.client.get("/enrol").text)
        post_form(auth_world.client, "/enrol", {"code": _code(auth_world, secret)})
        auth_world.clock.advance(TOTP_STEP)
        other = auth_world.new_client()
        assert post_login(other, account.email, PASSWORD).headers["location"] == "/login/totp"
        assert (
            post_form(other, "/login/totp", {"code": _code(auth_world, secret)}).status_code == 303
        )

    def test_a_wrong_enrolment_code_leaves_the_account_unenrolled(
        self, auth_world: AuthWorld
    ) -> None:
        account = auth_world.add_user("new@a.example", "engineer", enrolled=False)
        post_login(auth_world.client, account.email, PASSWORD)
        secret = _shown_secret(auth_world.client.get("/enrol").text)
        bad = "111111" if _code(auth_world, secret) != "111111" else "222222"
        assert post_form(auth_world.client, "/enrol", {"code": bad}).status_code == 401
        assert auth_world.client.get("/api/me").status_code == 401


def _shown_secret(page: str) -> str:
    match = re.search(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', page)
    assert match
    return match.group(1).replace(" ", "")


class TestLockout:
    def test_account_locks_after_the_threshold_even_for_the_right_password(
        self, auth_world: AuthWorld
    ) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        threshold = auth_world.vault.settings.auth.lockout_threshold
        statuses = [
            post_login(auth_world.client, account.email, f"wrong {i} password").status_code
            for i in range(threshold)
        ]
        assert statuses == [401] * threshold
        assert post_login(auth_world.client, account.email, PASSWORD).status_code == 429

    def test_lock_lifts_after_the_lockout_duration(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        for i in range(auth_world.vault.settings.auth.lockout_threshold):
            post_login(auth_world.client, account.email, f"wrong {i} password")
        minutes = auth_world.vault.settings.auth.lockout_minutes
        auth_world.clock.advance(timedelta(minutes=minutes) - timedelta(seconds=1))
        assert post_login(auth_world.client, account.email, PASSWORD).status_code == 429
        auth_world.clock.advance(timedelta(seconds=1))
        assert post_login(auth_world.client, account.email, PASSWORD).status_code == 303

    def test_unknown_accounts_lock_like_known_ones(self, auth_world: AuthWorld) -> None:
        for i in range(auth_world.vault.settings.auth.lockout_threshold):
            post_login(auth_world.client, "ghost@a.example", f"wrong {i} password")
        assert post_login(auth_world.client, "ghost@a.example", "another").status_code == 429

    def test_wrong_codes_count_towards_the_lock(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        right = _code(auth_world, account.totp_secret)
        wrong = "123456" if right != "123456" else "654321"
        post_login(auth_world.client, account.email, PASSWORD)
        for _ in range(auth_world.vault.settings.auth.lockout_threshold):
            post_form(auth_world.client, "/login/totp", {"code": wrong})
        assert post_form(auth_world.client, "/login/totp", {"code": right}).status_code == 429

    def test_one_address_trying_many_accounts_is_locked(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        limit = auth_world.vault.settings.auth.lockout_address_threshold
        for i in range(limit):
            post_login(auth_world.client, f"user{i}@a.example", "wrong password here")
        assert post_login(auth_world.client, account.email, PASSWORD).status_code == 429

    def test_a_successful_login_resets_the_account_counter(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        threshold = auth_world.vault.settings.auth.lockout_threshold
        for i in range(threshold - 1):
            post_login(auth_world.client, account.email, f"wrong {i} password")
        auth_world.login(auth_world.new_client(), account)
        for i in range(threshold - 1):
            post_login(auth_world.client, account.email, f"wrong {i} password")
        assert post_login(auth_world.client, account.email, PASSWORD).status_code == 303

    def test_lockouts_are_in_the_access_log(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        for i in range(auth_world.vault.settings.auth.lockout_threshold):
            post_login(auth_world.client, account.email, f"wrong {i} password")
        actions = [(e.action, e.outcome) for e in auth_world.vault.audit.events()]
        assert ("auth.lockout", "locked") in actions
        assert actions.count(("auth.login", "failure-credentials")) == 5


class TestOneTimeLinks:
    def _invite(self, world: AuthWorld) -> tuple[str, str]:
        account = world.add_user("inv@a.example", "clinician", enrolled=False)
        with world.vault.catalog.session() as session:
            return account.email, world.auth.links.issue(session, account.user_id, "invite")

    def _set(self, world: AuthWorld, token: str, password: str) -> int:
        data = {
            "token": token,
            "password": password,
            "password_confirm": password,
            "form_nonce": form_nonce(world.client, "/set-password"),
        }
        return world.client.post("/set-password", data=data, follow_redirects=False).status_code

    def test_a_link_sets_the_password_once(self, auth_world: AuthWorld) -> None:
        email, token = self._invite(auth_world)
        assert self._set(auth_world, token, "a brand new passphrase") == 200
        assert self._set(auth_world, token, "another new passphrase") == 400
        response = post_login(auth_world.client, email, "a brand new passphrase")
        assert response.headers["location"] == "/enrol"

    def test_an_expired_link_is_refused(self, auth_world: AuthWorld) -> None:
        _, token = self._invite(auth_world)
        hours = auth_world.vault.settings.auth.link_valid_hours
        auth_world.clock.advance(timedelta(hours=hours))
        assert self._set(auth_world, token, "a brand new passphrase") == 400

    def test_a_short_password_is_refused_and_the_link_still_works(
        self, auth_world: AuthWorld
    ) -> None:
        _, token = self._invite(auth_world)
        assert self._set(auth_world, token, "short") == 422
        assert self._set(auth_world, token, "a brand new passphrase") == 200

    def test_a_new_link_voids_the_previous_one(self, auth_world: AuthWorld) -> None:
        email, first = self._invite(auth_world)
        with auth_world.vault.catalog.session() as session:
            second = auth_world.auth.links.issue(session, user_by_email(session, email).id, "reset")
        assert self._set(auth_world, first, "a brand new passphrase") == 400
        assert self._set(auth_world, second, "a brand new passphrase") == 200

    def test_setting_a_password_ends_existing_sessions(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("c@a.example", "clinician")
        auth_world.login(auth_world.client, account)
        with auth_world.vault.catalog.session() as session:
            token = auth_world.auth.links.issue(session, account.user_id, "reset")
        self._set(auth_world, token, "a brand new passphrase")
        assert auth_world.client.get("/api/me").status_code == 401

    def test_setting_a_password_revokes_the_accounts_api_tokens(
        self, auth_world: AuthWorld
    ) -> None:
        account = auth_world.add_user("e@maker.example", "engineer", "Maker")
        api_token = auth_world.token(account)
        bearer = {"Authorization": f"Bearer {api_token}"}
        assert auth_world.client.get("/api/me", headers=bearer).status_code == 200
        with auth_world.vault.catalog.session() as session:
            link = auth_world.auth.links.issue(session, account.user_id, "reset")
        assert self._set(auth_world, link, "a brand new passphrase") == 200
        # whoever knew the old password may have made this token
        assert auth_world.client.get("/api/me", headers=bearer).status_code == 401

    def test_a_first_password_keeps_the_tokens_an_administrator_made(
        self, auth_world: AuthWorld
    ) -> None:
        account = auth_world.add_user("f@maker.example", "engineer", "Maker")
        api_token = auth_world.token(account)
        with auth_world.vault.catalog.session() as session:
            session.get(User, account.user_id).password_hash = None  # invited, never logged in
            link = auth_world.auth.links.issue(session, account.user_id, "invite")
        assert self._set(auth_world, link, "a brand new passphrase") == 200
        bearer = {"Authorization": f"Bearer {api_token}"}
        assert auth_world.client.get("/api/me", headers=bearer).status_code == 200


@pytest.mark.parametrize("role", ["clinician", "engineer", "dpo", "admin"])
class TestEveryRoleNeedsTheSecondFactor:
    def test_role_cannot_skip_the_code(self, auth_world: AuthWorld, role: str) -> None:
        account = auth_world.add_user(f"{role}@maker.example", role, "Maker")
        assert post_login(auth_world.client, account.email, PASSWORD).status_code == 303
        for path in ("/", "/admin", "/account/tokens"):
            response = auth_world.client.get(path, follow_redirects=False)
            expected = f"/login?next={path}" if path == "/account/tokens" else "/login"
            assert (response.status_code, response.headers.get("location")) == (303, expected)
