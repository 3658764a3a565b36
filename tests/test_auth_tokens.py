"""API tokens: bearer access, scope to one case, expiry, revocation, shown once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.services.auth_env import Account, AuthWorld, post_form
from vault.admin import assign_case, create_case, get_or_create_organisation
from vault.catalog.accounts import ApiToken, User
from vault.errors import InvalidInput


def _two_assigned_cases(world: AuthWorld, engineer: Account) -> tuple[str, str]:
    with world.vault.catalog.session() as session:
        org = get_or_create_organisation(session, "Hospital A")
        user = session.get(User, engineer.user_id)
        first = create_case(session, "TOK-1", org)
        second = create_case(session, "TOK-2", org)
        assign_case(session, first, user)
        assign_case(session, second, user)
        return first.id, second.id


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestTokenScope:
    def test_token_for_one_case_reaches_only_that_case(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        first, second = _two_assigned_cases(auth_world, engineer)
        token = auth_world.token(engineer, case_id=first)
        client = auth_world.client
        assert client.get(f"/api/cases/{first}", headers=_bearer(token)).status_code == 200
        assert client.get(f"/api/cases/{second}", headers=_bearer(token)).status_code == 404
        listed = [case["id"] for case in client.get("/api/cases", headers=_bearer(token)).json()]
        assert listed == [first]

    def test_token_for_all_assigned_cases_reaches_each(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        first, second = _two_assigned_cases(auth_world, engineer)
        token = auth_world.token(engineer)
        for case_id in (first, second):
            response = auth_world.client.get(f"/api/cases/{case_id}", headers=_bearer(token))
            assert response.status_code == 200

    def test_token_does_not_open_pages(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        token = auth_world.token(engineer)
        response = auth_world.client.get("/account/tokens", headers=_bearer(token))
        assert response.status_code == 403

    def test_only_engineers_hold_tokens(self, auth_world: AuthWorld) -> None:
        clinician = auth_world.add_user("c@a.example", "clinician")
        with pytest.raises(InvalidInput):
            auth_world.token(clinician)


class TestTokenLifetime:
    def test_token_stops_working_when_it_expires(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        token = auth_world.token(engineer, days=2)
        auth_world.clock.advance(timedelta(days=2) - timedelta(seconds=1))
        assert auth_world.client.get("/api/me", headers=_bearer(token)).status_code == 200
        auth_world.clock.advance(timedelta(seconds=1))
        assert auth_world.client.get("/api/me", headers=_bearer(token)).status_code == 401

    def test_revoked_token_stops_working_at_once(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        token = auth_world.token(engineer)
        assert auth_world.client.get("/api/me", headers=_bearer(token)).status_code == 200
        auth_world.login(auth_world.client, engineer)
        with auth_world.vault.catalog.session() as session:
            token_id = session.query(ApiToken).one().id
        response = post_form(auth_world.client, f"/account/tokens/{token_id}/revoke", {})
        assert response.status_code == 303
        other = auth_world.new_client()
        assert other.get("/api/me", headers=_bearer(token)).status_code == 401

    def test_another_engineer_cannot_revoke_my_token(self, auth_world: AuthWorld) -> None:
        mine = auth_world.add_user("e1@maker.example", "engineer", "Maker")
        theirs = auth_world.add_user("e2@maker.example", "engineer", "Maker")
        token = auth_world.token(mine)
        with auth_world.vault.catalog.session() as session:
            token_id = session.query(ApiToken).one().id
        auth_world.login(auth_world.client, theirs)
        response = post_form(auth_world.client, f"/account/tokens/{token_id}/revoke", {})
        assert response.status_code == 404
        assert auth_world.new_client().get("/api/me", headers=_bearer(token)).status_code == 200

    def test_disabling_a_user_ends_their_tokens(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        admin = auth_world.add_user("admin@maker.example", "admin", "Maker")
        token = auth_world.token(engineer)
        auth_world.login(auth_world.client, admin)
        post_form(auth_world.client, f"/admin/users/{engineer.user_id}/disable", {})
        assert auth_world.new_client().get("/api/me", headers=_bearer(token)).status_code == 401

    def test_malformed_authorization_header_is_refused(self, auth_world: AuthWorld) -> None:
        for header in ("Bearer", "Basic dXNlcjpwYXNz", "Bearer dvt_not-a-real-token"):
            response = auth_world.client.get("/api/me", headers={"Authorization": header})
            assert response.status_code == 401, header


class TestTokenShownOnce:
    def test_secret_appears_on_creation_and_never_again(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        auth_world.login(auth_world.client, engineer)
        created = post_form(auth_world.client, "/account/tokens", {"name": "slicer"})
        assert created.status_code == 201
        match = re.search(r'<code id="new-token">(dvt_[^<]+)</code>', created.text)
        assert match
        secret = match.group(1)
        assert secret not in auth_world.client.get("/account/tokens").text
        assert auth_world.new_client().get("/api/me", headers=_bearer(secret)).status_code == 200

    def test_creation_and_revocation_are_in_the_access_log(self, auth_world: AuthWorld) -> None:
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        auth_world.login(auth_world.client, engineer)
        post_form(auth_world.client, "/account/tokens", {"name": "slicer"})
        with auth_world.vault.catalog.session() as session:
            token_id = session.query(ApiToken).one().id
        post_form(auth_world.client, f"/account/tokens/{token_id}/revoke", {})
        logged = [(e.action, e.object_id) for e in auth_world.vault.audit.events()]
        assert ("token.create", token_id) in logged
        assert ("token.revoke", token_id) in logged
