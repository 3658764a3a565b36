"""The administration page's forms as a browser posts them: a refusal answers the
page again (HTML, not JSON) with its reason and what was typed, and every
control has a label.

The app runs on an embedded vault (``auth_world``); the administrator logs in
with a session cookie and posts forms with the CSRF token.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.page_support import unlabelled_controls
from tests.services.auth_env import Account, AuthWorld, post_form


@pytest.fixture
def admin(auth_world: AuthWorld) -> tuple[TestClient, Account]:
    account = auth_world.add_user("admin@maker.example", "admin", "Maker")
    client = auth_world.new_client()
    client.cookies.set(auth_world.cookie_name, auth_world.session_cookie(account))
    return client, account


class TestRefusedAdminForms:
    def test_a_duplicate_user_answers_the_page_with_the_reason_and_the_typed_values(
        self, auth_world: AuthWorld, admin: tuple[TestClient, Account]
    ) -> None:
        client, account = admin
        form = {"email": "ADMIN@maker.example", "role": "dpo"}
        answer = post_form(
            client, "/admin/users", {**form, "organisation_id": account.organisation_id}
        )
        assert answer.status_code == 422
        assert answer.headers["content-type"].startswith("text/html")
        assert 'role="alert">a user with this e-mail address already exists' in answer.text
        assert 'value="ADMIN@maker.example"' in answer.text
        assert "<option selected>dpo</option>" in answer.text

    def test_a_duplicate_pacs_node_and_case_are_refused_on_the_page(
        self, auth_world: AuthWorld, admin: tuple[TestClient, Account]
    ) -> None:
        client, account = admin
        org = account.organisation_id
        node = {"ae_title": "PACS_AE", "host": "10.0.0.5", "organisation_id": org}
        assert post_form(client, "/admin/pacs-nodes", node).status_code == 303
        again = post_form(client, "/admin/pacs-nodes", {**node, "host": "10.0.0.6"})
        assert again.status_code == 422 and again.headers["content-type"].startswith("text/html")
        assert "this AE title is already registered" in again.text
        assert 'value="10.0.0.6"' in again.text
        case = {"reference": "CASE-9", "organisation_id": org}
        assert post_form(client, "/admin/cases", case).status_code == 303
        again = post_form(client, "/admin/cases", case)
        assert (
            again.status_code == 422 and "a case with this reference already exists" in again.text
        )
        assert 'value="CASE-9"' in again.text

    def test_an_unknown_organisation_is_a_page_not_json(
        self, admin: tuple[TestClient, Account]
    ) -> None:
        client, _ = admin
        form = {"reference": "CASE-10", "organisation_id": "nope"}
        answer = post_form(client, "/admin/cases", form)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert "no such organisation" in answer.text


class TestAdminPageLabels:
    def test_every_control_has_a_label(self, admin: tuple[TestClient, Account]) -> None:
        client, _ = admin
        page = client.get("/admin")
        assert page.status_code == 200
        assert unlabelled_controls(page.text) == []
