"""A page asked for before logging in is where the login ends (``next``).

A case link (``/cases/<id>/upload``) sent to a surgeon's assistant must
survive the login: the redirect to the login page carries the page's path,
the password and code steps pass it on, and the code step ends there. Only
a same-site path of a known page is followed: anything else (another host,
a scheme, a backslash, an unknown page) ends on the home page.
"""

from __future__ import annotations

import pyotp
import pytest

from tests.services.auth_env import PASSWORD, TOTP_STEP, AuthWorld, form_nonce, post_form
from vault.api.routes_auth import safe_next

CASE_PAGE = "/cases/0123456789abcdef0123456789abcdef/upload"


def _log_in_with_next(world: AuthWorld, next_page: str) -> tuple[str, str, str]:
    """Password then code, both carrying ``next_page``: (after password, the
    code page, after code)."""
    account = world.add_user("c@a.example", "clinician")
    client = world.client
    data = {
        "email": account.email,
        "password": PASSWORD,
        "form_nonce": form_nonce(client),
        "next": next_page,
    }
    first = client.post("/login", data=data, follow_redirects=False)
    assert first.status_code == 303, first.text
    code_page = client.get(first.headers["location"]).text
    code = pyotp.TOTP(account.totp_secret).at(world.clock.now())
    second = post_form(client, "/login/totp", {"code": code, "next": next_page})
    assert second.status_code == 303, second.text
    world.clock.advance(TOTP_STEP)
    return first.headers["location"], code_page, second.headers["location"]


class TestACaseLinkSurvivesTheLogin:
    def test_an_anonymous_visit_to_a_case_page_is_sent_to_the_login_with_its_path(
        self, auth_world: AuthWorld
    ) -> None:
        response = auth_world.client.get(CASE_PAGE, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={CASE_PAGE}"

    def test_the_login_page_carries_the_path_in_its_form(self, auth_world: AuthWorld) -> None:
        page = auth_world.client.get(f"/login?next={CASE_PAGE}")
        assert f'name="next" value="{CASE_PAGE}"' in page.text

    def test_password_and_code_lead_to_the_case_page(self, auth_world: AuthWorld) -> None:
        after_password, code_page, after_code = _log_in_with_next(auth_world, CASE_PAGE)
        assert after_password == f"/login/totp?next={CASE_PAGE}"
        assert f'name="next" value="{CASE_PAGE}"' in code_page
        assert after_code == CASE_PAGE

    def test_without_next_the_login_ends_on_the_home_page(self, auth_world: AuthWorld) -> None:
        after_password, code_page, after_code = _log_in_with_next(auth_world, "")
        assert (after_password, after_code) == ("/login/totp", "/")
        assert 'name="next"' not in code_page

    @pytest.mark.parametrize(
        "target",
        [
            "//evil.example/cases/0123456789abcdef0123456789abcdef/upload",
            "https://evil.example/",
            "/\\evil.example",
            "/cases/0123456789abcdef0123456789abcdef/upload?x=1",
            "/cases/../admin",
            "/api/uploads",
            "javascript:alert(1)",
            "/cases/0123456789ABCDEF/upload",
        ],
    )
    def test_anything_but_a_known_page_path_ends_on_the_home_page(
        self, auth_world: AuthWorld, target: str
    ) -> None:
        assert safe_next(target) == ""
        after_password, code_page, after_code = _log_in_with_next(auth_world, target)
        assert (after_password, after_code) == ("/login/totp", "/")
        assert 'name="next"' not in code_page


@pytest.mark.parametrize("path", ["/", "/upload", "/engineer", "/account/tokens", CASE_PAGE])
def test_known_page_paths_are_followed(path: str) -> None:
    assert safe_next(path) == path
