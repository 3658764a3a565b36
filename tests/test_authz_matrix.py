"""The authorisation matrix: every route, every kind of caller, the exact status.

Columns are the callers: nobody, each role, a clinician of another hospital,
a session that passed the password but not the TOTP step (``pending``), a
valid engineer API token, an expired token and a revoked one. Rows are
requests; every route the app declares must appear in at least one row, and
every route must declare a permission unless it is on the public allowlist.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from tests.services.auth_env import BASE_URL, START, AuthWorld, auth_test_settings
from vault.admin import assign_case, create_case, get_or_create_organisation
from vault.api.app import create_app
from vault.auth import declared_permission
from vault.auth.sessions import csrf_token
from vault.catalog.accounts import ApiToken, User
from vault.catalog.models import Case
from vault.clock import FrozenClock

COLUMNS = (
    "anon",
    "clinician",
    "engineer",
    "dpo",
    "admin",
    "other_org",
    "pending",
    "token",
    "expired",
    "revoked",
)

# Routes reachable without a login, each for a stated reason.
PUBLIC = {
    ("GET", "/healthz"),  # liveness probe
    ("GET", "/login"),  # the login form
    ("POST", "/login"),  # guarded by a double-submit nonce and throttling
    ("GET", "/set-password"),  # the one-time link page
    ("POST", "/set-password"),  # authorised by the one-time link token itself
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    form: dict[str, str] | None
    expected: tuple[int, ...]  # in COLUMNS order

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def row(method: str, path: str, expected: str, form: dict[str, str] | None = None) -> Row:
    return Row(method, path, form, tuple(int(code) for code in expected.split()))


# fmt: off
#   method       path                                     ano cli eng dpo adm oth pnd tok exp rev
MATRIX = (
    row("GET",   "/",                                    "303 200 200 200 200 200 303 403 401 401"),
    row("GET",   "/login/totp",                          "303 403 403 403 403 403 200 403 401 401"),
    row("POST",  "/login/totp",                          "303 403 403 403 403 403 401 403 401 401",
        {"code": "abc"}),
    row("GET",   "/enrol",                               "303 403 403 403 403 403 303 403 401 401"),
    row("POST",  "/enrol",                               "303 403 403 403 403 403 303 403 401 401",
        {"code": "abc"}),
    row("POST",  "/logout",                              "303 303 303 303 303 303 303 403 401 401",
        {}),
    row("GET",   "/account/tokens",                      "303 403 200 403 403 403 303 403 401 401"),
    row("POST",  "/account/tokens",                      "303 403 201 403 403 403 303 403 401 401",
        {"name": "matrix"}),
    row("POST",  "/account/tokens/{spare_token}/revoke", "303 403 303 403 403 403 303 403 401 401",
        {}),
    row("GET",   "/api/me",                              "401 200 200 200 200 200 401 200 401 401"),
    row("GET",   "/api/cases",                           "401 200 200 200 200 200 401 200 401 401"),
    row("GET",   "/api/cases/{case_a}",                  "401 200 200 200 200 404 401 200 401 401"),
    row("GET",   "/api/cases/{case_b}",                  "401 404 404 200 200 200 401 404 401 401"),
    row("GET",   "/api/cases/{case_unassigned}",         "401 200 404 200 200 404 401 404 401 401"),
    row("GET",   "/api/cases/0123456789abcdef",          "401 404 404 404 404 404 401 404 401 401"),
    row("GET",   "/admin",                               "303 403 403 403 200 403 303 403 401 401"),
    row("POST",  "/admin/organisations",                 "303 403 403 403 303 403 303 403 401 401",
        {"name": "Hospital Matrix", "kind": "hospital"}),
    row("POST",  "/admin/users",                         "303 403 403 403 201 403 303 403 401 401",
        {"email": "new@matrix.example", "role": "clinician", "organisation_id": "{org_a}"}),
    row("POST",  "/admin/users/{clinician}/reset",       "303 403 403 403 201 403 303 403 401 401",
        {}),
    row("POST",  "/admin/users/{spare_user}/disable",    "303 403 403 403 303 403 303 403 401 401",
        {}),
    row("POST",  "/admin/pacs-nodes",                    "303 403 403 403 303 403 303 403 401 401",
        {"ae_title": "MATRIXPACS", "organisation_id": "{org_a}"}),
    row("POST",  "/admin/cases",                         "303 403 403 403 303 403 303 403 401 401",
        {"reference": "MATRIX-NEW", "organisation_id": "{org_a}"}),
    row("POST",  "/admin/assignments",                   "303 403 403 403 303 403 303 403 401 401",
        {"case_id": "{case_b}", "user_id": "{engineer}"}),
    row("GET",   "/api/engineer/studies",                "401 403 200 403 403 403 401 200 401 401"),
    row("GET",   "/api/engineer/studies/0123456789abcdef/archive",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/api/engineer/instances/0123456789abcdef",
                                                         "401 403 404 403 403 403 401 404 401 401"),
)
# fmt: on


class Callers:
    """Credentials for each column, fresh for every request."""

    def __init__(self, world: AuthWorld) -> None:
        self.world = world
        self.accounts = {
            "clinician": world.add_user("clin@a.example", "clinician", "Hospital A"),
            "engineer": world.add_user("eng@maker.example", "engineer", "Maker"),
            "dpo": world.add_user("dpo@maker.example", "dpo", "Maker"),
            "admin": world.add_user("admin@maker.example", "admin", "Maker"),
            "other_org": world.add_user("clin@b.example", "clinician", "Hospital B"),
        }
        self.spare_user = world.add_user("spare@a.example", "clinician", "Hospital A")
        self.ids = self._make_cases()
        engineer = self.accounts["engineer"]
        self.tokens = {
            "token": world.token(engineer),
            "expired": self._expired_token(),
            "revoked": self._revoked_token(),
        }
        self.ids |= {
            "spare_token": self._token_id(world.token(engineer)),
            "clinician": self.accounts["clinician"].user_id,
            "spare_user": self.spare_user.user_id,
            "engineer": engineer.user_id,
            "org_a": self.accounts["clinician"].organisation_id,
        }

    def _make_cases(self) -> dict[str, str]:
        with self.world.vault.catalog.session() as session:
            org_a = get_or_create_organisation(session, "Hospital A")
            org_b = get_or_create_organisation(session, "Hospital B")
            case_a = create_case(session, "MATRIX-A", org_a)
            case_b = create_case(session, "MATRIX-B", org_b)
            unassigned = create_case(session, "MATRIX-A2", org_a)
            assign_case(session, case_a, session.get(User, self.accounts["engineer"].user_id))
            return {"case_a": case_a.id, "case_b": case_b.id, "case_unassigned": unassigned.id}

    def _token_id(self, secret: str) -> str:
        from vault.auth.digests import digest

        with self.world.vault.catalog.session() as session:
            token = session.query(ApiToken).filter_by(token_hash=digest(secret)).one()
            return token.id

    def _expired_token(self) -> str:
        secret = self.world.token(self.accounts["engineer"], days=1)
        with self.world.vault.catalog.session() as session:
            token = session.get(ApiToken, self._token_id(secret))
            token.expires_at = START - timedelta(seconds=1)
        return secret

    def _revoked_token(self) -> str:
        secret = self.world.token(self.accounts["engineer"])
        with self.world.vault.catalog.session() as session:
            self.world.auth.tokens.revoke(session, self._token_id(secret))
        return secret

    def request(self, client: TestClient, column: str, item: Row) -> int:
        client.cookies.clear()
        headers: dict[str, str] = {}
        form = {k: v.format(**self.ids) for k, v in (item.form or {}).items()}
        if column in self.tokens:
            headers["Authorization"] = f"Bearer {self.tokens[column]}"
        elif column != "anon":
            account = self.accounts["clinician" if column == "pending" else column]
            stage = "totp" if column == "pending" else "full"
            cookie = self.world.session_cookie(account, stage)
            client.cookies.set(self.world.cookie_name, cookie)
            form["csrf_token"] = csrf_token(cookie)
        path = item.path.format(**self.ids)
        if item.method == "GET":
            response = client.get(path, headers=headers, follow_redirects=False)
        else:
            response = client.post(path, data=form, headers=headers, follow_redirects=False)
        return response.status_code


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Callers, TestClient]]:
    clock = FrozenClock(START)
    settings = auth_test_settings(tmp_path_factory.mktemp("matrix") / "data")
    with TestClient(create_app(settings, clock=clock), base_url=BASE_URL) as client:
        world = AuthWorld(client, clock)
        yield Callers(world), world.new_client()


def _routes(app: object) -> Iterator[tuple[str, str, object]]:
    for route in app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                yield method, route.path, route  # type: ignore[attr-defined]


class TestAuthorisationMatrix:
    @pytest.mark.parametrize("item", MATRIX, ids=lambda item: item.id)
    def test_each_caller_gets_the_expected_status(
        self, callers: tuple[Callers, TestClient], item: Row
    ) -> None:
        table, client = callers
        actual = {column: table.request(client, column, item) for column in COLUMNS}
        assert actual == dict(zip(COLUMNS, item.expected, strict=True))


class TestEveryRouteIsDeclared:
    def test_every_route_declares_a_permission_or_is_public(
        self, callers: tuple[Callers, TestClient]
    ) -> None:
        _, client = callers
        undeclared = [
            f"{method} {path}"
            for method, path, route in _routes(client.app)
            if (method, path) not in PUBLIC and declared_permission(route) is None
        ]
        assert undeclared == []

    def test_public_routes_declare_no_permission(self, callers: tuple[Callers, TestClient]) -> None:
        _, client = callers
        declared_public = [
            f"{method} {path}"
            for method, path, route in _routes(client.app)
            if (method, path) in PUBLIC and declared_permission(route) is not None
        ]
        assert declared_public == []

    def test_every_declared_route_appears_in_the_matrix(
        self, callers: tuple[Callers, TestClient]
    ) -> None:
        _, client = callers
        app_routes = {
            (method, route.path)  # type: ignore[attr-defined]
            for method, _, route in _routes(client.app)
            if isinstance(route, APIRoute) and declared_permission(route) is not None
        }
        in_matrix = {(item.method, _template(item.path)) for item in MATRIX}
        assert sorted(app_routes - in_matrix) == []


def _template(path: str) -> str:
    """The route template a matrix path exercises."""
    templates = {
        "/account/tokens/{spare_token}/revoke": "/account/tokens/{token_id}/revoke",
        "/admin/users/{clinician}/reset": "/admin/users/{user_id}/reset",
        "/admin/users/{spare_user}/disable": "/admin/users/{user_id}/disable",
    }
    if path.startswith("/api/cases/"):
        return "/api/cases/{case_id}"
    if path.startswith("/api/engineer/studies/"):
        return "/api/engineer/studies/{pseudo_study_id}/archive"
    if path.startswith("/api/engineer/instances/"):
        return "/api/engineer/instances/{pseudo_instance_id}"
    return templates.get(path, path)


class TestCaseReachAgreesWithListing:
    def test_listing_shows_exactly_the_cases_each_caller_can_open(
        self, callers: tuple[Callers, TestClient]
    ) -> None:
        table, client = callers
        for column in ("clinician", "engineer", "dpo", "admin", "other_org", "token"):
            client.cookies.clear()
            headers = {}
            if column == "token":
                headers["Authorization"] = f"Bearer {table.tokens['token']}"
            else:
                cookie = table.world.session_cookie(table.accounts[column])
                client.cookies.set(table.world.cookie_name, cookie)
            listed = {case["id"] for case in client.get("/api/cases", headers=headers).json()}
            with table.world.vault.catalog.session() as session:
                every = [case.id for case in session.query(Case)]
            openable = {
                case_id
                for case_id in every
                if client.get(f"/api/cases/{case_id}", headers=headers).status_code == 200
            }
            assert listed == openable, column
            assert listed, column
