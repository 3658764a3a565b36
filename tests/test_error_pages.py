"""Refusals of a page a browser opens: an HTML page with the same status; API
clients, and every API path, keep their JSON exactly as before."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from starlette.requests import Request

from tests.services.auth_env import AuthWorld
from tests.services.browser import Served, log_in, shot
from vault.admin import create_user, get_or_create_organisation
from vault.api.error_pages import wants_page
from vault.api.security import CSP
from vault.auth import totp

# What Chromium sends when it opens a page.
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
JSON_ACCEPT = "application/json"
UNKNOWN_CASE = "ab" * 16
_INLINE = re.compile(r"<script|<style|\sstyle=|\son[a-z]+\s*=", re.IGNORECASE)


@pytest.fixture
def surgeon(auth_world: AuthWorld) -> TestClient:
    return auth_world.logged_in(auth_world.add_user("surgeon@hospital.example", "clinician"))


@pytest.fixture
def engineer(auth_world: AuthWorld) -> TestClient:
    return auth_world.logged_in(auth_world.add_user("eng@maker.example", "engineer", "Maker"))


def assert_error_page(response: Response, status: int, heading: str, reason: str) -> str:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert f'<h1 id="error-heading">{heading}</h1>' in page
    assert f'<p id="error-reason">{reason}</p>' in page
    assert '<a href="/" id="home-link">' in page
    assert '<link rel="stylesheet" href="/static/vault.css">' in page
    assert _INLINE.search(page) is None  # nothing the CSP would block
    assert '"detail"' not in page and "Traceback" not in page
    return page


class TestAPageARoleMayNotOpen:
    @pytest.mark.parametrize("path", ["/admin", "/dpo", "/engineer"])
    def test_a_surgeon_gets_a_403_page(self, surgeon: TestClient, path: str) -> None:
        refused = surgeon.get(path, headers={"accept": BROWSER})
        assert_error_page(
            refused, 403, "This page is not open to you", "Not permitted for this account."
        )

    def test_an_engineer_opening_the_upload_page_gets_a_403_page(
        self, engineer: TestClient
    ) -> None:
        refused = engineer.get("/upload", headers={"accept": BROWSER})
        assert_error_page(
            refused, 403, "This page is not open to you", "Not permitted for this account."
        )

    def test_api_clients_keep_the_json(self, surgeon: TestClient) -> None:
        for accept in (JSON_ACCEPT, "*/*", "text/html;q=0.5, application/json"):
            refused = surgeon.get("/admin", headers={"accept": accept})
            assert refused.status_code == 403
            assert refused.json() == {
                "error": "forbidden",
                "detail": "not permitted for this account",
            }


class TestAPageThatIsNotThere:
    def test_an_unknown_case_upload_page_is_a_404_page_without_the_id(
        self, surgeon: TestClient
    ) -> None:
        refused = surgeon.get(f"/cases/{UNKNOWN_CASE}/upload", headers={"accept": BROWSER})
        page = assert_error_page(refused, 404, "Page not found", "No such case.")
        assert UNKNOWN_CASE not in page
        assert 'href="/dpo"' not in page  # the surgeon's own navigation, nothing more
        assert 'id="logout"' in page

    def test_an_unknown_address_is_a_404_page(self, surgeon: TestClient) -> None:
        refused = surgeon.get("/no-such-page", headers={"accept": BROWSER})
        assert_error_page(refused, 404, "Page not found", "There is no page at this address.")

    def test_api_clients_keep_the_json(self, surgeon: TestClient) -> None:
        unknown_case = surgeon.get(f"/cases/{UNKNOWN_CASE}/upload", headers={"accept": JSON_ACCEPT})
        assert unknown_case.status_code == 404
        assert unknown_case.json() == {"error": "not-found", "detail": "no such case"}
        unknown_path = surgeon.get("/no-such-page", headers={"accept": JSON_ACCEPT})
        assert (unknown_path.status_code, unknown_path.json()) == (404, {"detail": "Not Found"})


class TestWhatStaysAsItWas:
    @pytest.mark.parametrize(
        "path",
        [
            f"/api/cases/{UNKNOWN_CASE}",
            "/api/no-such-route",
            "/dicomweb/studies",
            f"/api/uploads/{UNKNOWN_CASE}/summary",
        ],
    )
    def test_api_paths_answer_json_even_to_a_browser(self, surgeon: TestClient, path: str) -> None:
        refused = surgeon.get(path, headers={"accept": BROWSER})
        assert refused.status_code in (403, 404)
        assert refused.headers["content-type"] == "application/json"
        assert "detail" in refused.json()

    def test_an_anonymous_visitor_is_still_sent_to_the_login_page(
        self, auth_world: AuthWorld
    ) -> None:
        anonymous = auth_world.new_client()
        sent = anonymous.get("/admin", headers={"accept": BROWSER}, follow_redirects=False)
        assert (sent.status_code, sent.headers["location"]) == (303, "/login")

    def test_a_refused_form_post_keeps_its_answer(self, surgeon: TestClient) -> None:
        posted = surgeon.post("/admin/cases", data={"reference": "X"}, headers={"accept": BROWSER})
        assert posted.status_code == 403
        assert posted.headers["content-type"] == "application/json"


def request(method: str, path: str, accept: str | None) -> Request:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    return Request({"type": "http", "method": method, "path": path, "headers": headers})


class TestWhatCountsAsANavigation:
    @pytest.mark.parametrize(
        ("accept", "page"),
        [
            (BROWSER, True),
            ("text/html", True),
            ("text/*;q=0.9, application/json;q=0.5", True),
            (None, False),
            ("*/*", False),
            ("application/json", False),
            ("application/json, text/html", False),
            ("text/html;q=0.4, */*;q=0.5", False),
            ("text/html;q=oops", False),
        ],
    )
    def test_accept_decides_on_page_paths(self, accept: str | None, page: bool) -> None:
        assert wants_page(request("GET", "/admin", accept)) is page

    @pytest.mark.parametrize("path", ["/api/me", "/dicomweb/studies", "/metrics", "/readyz"])
    def test_api_paths_and_other_methods_never_do(self, path: str) -> None:
        assert not wants_page(request("GET", path, BROWSER))
        assert not wants_page(request("POST", "/admin/users", BROWSER))


def _surgeon(served: Served, password: str) -> str:
    """A clinician with ``password`` and an enrolled TOTP secret; the secret."""
    secret = totp.new_secret()
    with served.auth.vault.catalog.session() as session:
        org = get_or_create_organisation(session, "Hospital A")
        password_hash = served.auth.passwords.hash(password)
        user = create_user(
            session, "surgeon@hospital.example", "clinician", org, password_hash=password_hash
        )
        user.totp_sealed = served.auth.sealer.seal(user.id, secret)
        user.totp_confirmed_at = served.clock.now()
    return secret


@pytest.mark.browser
class TestInChromium:
    def test_a_surgeon_sees_a_styled_refusal_and_finds_the_way_home(
        self, served: Served, browser: object
    ) -> None:
        password = "a surgeon's passphrase"
        secret = _surgeon(served, password)
        page = browser.new_page()  # type: ignore[attr-defined]
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"{served.url}/login")
        log_in(page, served.url, "surgeon@hospital.example", password, secret, served.clock.now())

        refused = page.goto(f"{served.url}/admin")
        assert refused.status == 403
        heading = page.get_by_role("heading", level=1)
        assert heading.inner_text() == "This page is not open to you"
        assert page.inner_text("#error-reason") == "Not permitted for this account."
        header = page.locator("header")
        assert header.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(18, 53, 91)"
        shot(page, "error-403")

        missing = page.goto(f"{served.url}/cases/{UNKNOWN_CASE}/upload")
        assert missing.status == 404
        assert heading.inner_text() == "Page not found"
        assert UNKNOWN_CASE not in page.inner_text("main")
        page.get_by_role("link", name="Back to the home page").click()
        page.wait_for_url(f"{served.url}/")
        assert page.inner_text("#whoami") == "surgeon@hospital.example"
        # Chromium logs the refused documents themselves (403, 404), and nothing else:
        # no Content-Security-Policy violation, no script error.
        others = [text for text in console if not text.startswith("Failed to load resource")]
        assert others == []
