"""The authorisation matrix: every route, every kind of caller, the exact status.

Columns are the callers: nobody, each role, a clinician of another hospital,
a session that passed the password but not the TOTP step (``pending``), a
valid engineer API token, an expired token and a revoked one. Rows are
requests; every route the app declares must appear in at least one row, and
every route must declare a permission unless it is on the public allowlist.
An administrator's ``metrics`` token (a Prometheus scraper's) is walked over
every row apart: it reads ``/metrics`` and gets 403 everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from tests.services.auth_env import BASE_URL, START, AuthWorld, auth_test_settings
from vault.admin import assign_case, create_case, get_or_create_organisation, register_pacs_node
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
    ("GET", "/readyz"),  # readiness probe: component names and ok/unavailable only
    ("GET", "/login"),  # the login form
    ("POST", "/login"),  # guarded by a double-submit nonce and throttling
    ("GET", "/set-password"),  # the one-time link page
    ("POST", "/set-password"),  # authorised by the one-time link token itself
}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    form: dict[str, str] | None
    expected: tuple[int, ...]  # in COLUMNS order
    # Requests that are not a GET or a form POST (JSON, tus): headers and a JSON body.
    headers: dict[str, str] | None = None
    json: dict[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def row(
    method: str,
    path: str,
    expected: str,
    form: dict[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
    json: dict[str, str] | None = None,
) -> Row:
    codes = tuple(int(code) for code in expected.split())
    return Row(method, path, form, codes, headers, json)


TUS = {"Tus-Resumable": "1.0.0"}
TUS_PATCH = TUS | {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}


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
    row("POST",  "/login/cancel",                        "303 403 403 403 403 403 303 403 401 401",
        {}),
    row("GET",   "/account/tokens",                      "303 403 200 403 403 403 303 403 401 401"),
    row("POST",  "/account/tokens",                      "303 403 201 403 403 403 303 403 401 401",
        {"name": "matrix"}),
    row("POST",  "/account/tokens/{spare_token}/revoke", "303 403 303 403 403 403 303 403 401 401",
        {}),
    row("GET",   "/api/me",                              "401 200 200 200 200 200 401 200 401 401"),
    row("GET",   "/openapi.json",                        "401 200 200 200 200 200 401 200 401 401"),
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
    row("POST",  "/admin/pacs-nodes/{pacs}/disable",     "303 403 403 403 303 403 303 403 401 401",
        {}),
    row("POST",  "/admin/pacs-nodes/{pacs}/enable",      "303 403 403 403 303 403 303 403 401 401",
        {}),
    row("POST",  "/admin/cases",                         "303 403 403 403 303 403 303 403 401 401",
        {"reference": "MATRIX-NEW", "organisation_id": "{org_a}"}),
    row("POST",  "/admin/assignments",                   "303 403 403 403 303 403 303 403 401 401",
        {"case_id": "{case_b}", "user_id": "{engineer}"}),
    row("GET",   "/api/engineer/studies",                "401 403 200 403 403 403 401 200 401 401"),
    row("GET",   "/api/engineer/studies/0123456789abcdef/archive",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/api/engineer/instances/0123456789abcdef",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("HEAD",  "/api/engineer/studies/0123456789abcdef/archive",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("HEAD",  "/api/engineer/studies/0123456789abcdef/series/2.25.1/archive",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("HEAD",  "/api/engineer/instances/0123456789abcdef",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dpo",                                 "303 403 403 200 200 403 303 403 401 401"),
    row("POST",  "/dpo/requests",                        "303 403 403 303 303 403 303 403 401 401",
        {"kind": "access", "received": "2026-01-05"}),
    row("GET",   "/dpo/requests/0123456789abcdef",       "303 403 403 404 404 403 303 403 401 401"),
    row("POST",  "/dpo/requests/0123456789abcdef/search",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {"patient_id": "MATRIX-1"}),
    row("POST",  "/dpo/requests/0123456789abcdef/verify",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {"method": "in-person"}),
    row("POST",  "/dpo/requests/0123456789abcdef/extend",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {"months": "1", "reason": "complexity"}),
    row("POST",  "/dpo/requests/0123456789abcdef/package",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {}),
    row("POST",  "/dpo/requests/0123456789abcdef/rectify",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {"birth_date": "19610315"}),
    row("POST",  "/dpo/requests/0123456789abcdef/restrict",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {}),
    row("POST",  "/dpo/requests/0123456789abcdef/lift-restriction",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {}),
    row("POST",  "/dpo/requests/0123456789abcdef/erase",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {}),
    row("POST",  "/dpo/requests/0123456789abcdef/close",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {"outcome": "completed", "note": "matrix"}),
    row("POST",  "/dpo/breaches",                        "303 403 403 303 303 403 303 403 401 401",
        {"detected": "2026-01-05T08:00", "nature": "confidentiality", "description": "matrix"}),
    row("GET",   "/dpo/breaches/0123456789abcdef",       "303 403 403 404 404 403 303 403 401 401"),
    row("POST",  "/dpo/breaches/0123456789abcdef/assessment",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {}),
    row("POST",  "/dpo/breaches/0123456789abcdef/entries",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {"kind": "note", "text": "matrix"}),
    row("POST",  "/dpo/breaches/0123456789abcdef/notify",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {"party": "authority", "exemption": "unlikely-risk"}),
    row("POST",  "/dpo/breaches/0123456789abcdef/close",
                                                         "303 403 403 404 404 403 303 403 401 401",
        {}),
    row("GET",   "/api/engineer/studies/0123456789abcdef",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/api/engineer/studies/0123456789abcdef/series/2.25.1",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/api/engineer/studies/0123456789abcdef/series/2.25.1/archive",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies",                    "401 403 204 403 403 403 401 204 401 401"),
    row("GET",   "/dicomweb/series",                     "401 403 204 403 403 403 401 204 401 401"),
    row("GET",   "/dicomweb/instances",                  "401 403 204 403 403 403 401 204 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series",      "401 403 204 403 403 403 401 204 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/instances",   "401 403 204 403 403 403 401 204 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series/2.25.2/instances",
                                                         "401 403 204 403 403 403 401 204 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1",             "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series/2.25.2",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series/2.25.2/instances/2.25.3",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/metadata",    "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series/2.25.2/metadata",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series/2.25.2/instances/2.25.3/metadata",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series/2.25.2/instances/2.25.3/frames/1",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/dicomweb/studies/2.25.1/series/2.25.2/instances/2.25.3/bulkdata/7FE00010",
                                                         "401 403 404 403 403 403 401 404 401 401"),
    row("GET",   "/engineer",                            "303 403 200 403 403 403 303 403 401 401"),
    row("GET",   "/engineer/studies/0123456789abcdef/series/2.25.1/thumbnail.png",
                                                         "303 403 404 403 403 403 303 403 401 401"),
    row("GET",   "/upload",                              "303 200 403 403 403 200 303 403 401 401"),
    row("GET",   "/cases/{case_a}/upload",               "303 200 403 403 403 404 303 403 401 401"),
    row("GET",   "/cases/{case_b}/upload",               "303 404 403 403 403 200 303 403 401 401"),
    row("GET",   "/api/uploads/0123456789abcdef/summary",
                                                         "401 404 403 403 403 404 401 403 401 401"),
    row("GET",   "/api/uploads/0123456789abcdef/series/0123456789abcdef/thumbnail.png",
                                                         "401 404 403 403 403 404 401 403 401 401"),
    row("POST",  "/api/uploads",                         "401 201 403 403 403 404 401 403 401 401",
        json={"case_id": "{case_a}"}),
    row("GET",   "/api/uploads?case_id={case_a}",        "401 200 403 403 403 404 401 403 401 401"),
    row("GET",   "/api/uploads/0123456789abcdef",        "401 404 403 403 403 404 401 403 401 401"),
    row("POST",  "/api/uploads/0123456789abcdef/complete",
                                                         "401 404 403 403 403 404 401 403 401 401",
        headers={}),
    row("OPTIONS", "/api/uploads/0123456789abcdef/files",
                                                         "401 204 403 403 403 204 401 403 401 401",
        headers=TUS),
    row("POST",  "/api/uploads/0123456789abcdef/files",  "401 404 403 403 403 404 401 403 401 401",
        headers=TUS | {"Upload-Length": "10"}),
    row("HEAD",  "/api/uploads/0123456789abcdef/files/0123456789abcdef",
                                                         "401 404 403 403 403 404 401 403 401 401",
        headers=TUS),
    row("PATCH", "/api/uploads/0123456789abcdef/files/0123456789abcdef",
                                                         "401 404 403 403 403 404 401 403 401 401",
        headers=TUS_PATCH),
    row("DELETE", "/api/uploads/0123456789abcdef/files/0123456789abcdef",
                                                         "401 404 403 403 403 404 401 403 401 401",
        headers=TUS),
    row("GET",   "/api/uploads/0123456789abcdef/files/0123456789abcdef/result",
                                                         "401 404 403 403 403 404 401 403 401 401"),
    row("GET",   "/metrics",                             "401 403 403 403 200 403 401 403 401 401"),
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
            # Not a matrix column: TestMetricsTokenReadsOnlyMetrics walks it over every row.
            "metrics": world.token(self.accounts["admin"], scope="metrics"),
        }
        self.ids |= {
            "spare_token": self._token_id(world.token(engineer)),
            "clinician": self.accounts["clinician"].user_id,
            "spare_user": self.spare_user.user_id,
            "engineer": engineer.user_id,
            "org_a": self.accounts["clinician"].organisation_id,
            "pacs": self._spare_pacs_node(),
        }

    def _spare_pacs_node(self) -> str:
        with self.world.vault.catalog.session() as session:
            organisation = get_or_create_organisation(session, "Hospital A")
            return register_pacs_node(session, "SPAREPACS", organisation).id

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
        if item.method in ("GET", "HEAD") and item.headers is None:
            response = client.request(item.method, path, headers=headers, follow_redirects=False)
        elif item.headers is None and item.json is None:
            response = client.post(path, data=form, headers=headers, follow_redirects=False)
        else:
            response = self._send(client, item, path, headers, form.get("csrf_token"))
        return response.status_code

    def _send(
        self, client: TestClient, item: Row, path: str, headers: dict[str, str], csrf: str | None
    ) -> httpx.Response:
        """A JSON or tus request: the CSRF token (sessions) goes in its header."""
        headers |= {k: v.format(**self.ids) for k, v in (item.headers or {}).items()}
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        body = {k: v.format(**self.ids) for k, v in item.json.items()} if item.json else None
        return client.request(item.method, path, headers=headers, json=body, follow_redirects=False)


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Callers, TestClient]]:
    clock = FrozenClock(START)
    settings = auth_test_settings(tmp_path_factory.mktemp("matrix") / "data")
    with TestClient(create_app(settings, clock=clock), base_url=BASE_URL) as client:
        world = AuthWorld(client, clock)
        yield Callers(world), world.new_client()


def _flat_routes(app: object) -> Iterator[tuple[str, object]]:
    """(full path, route) of every route, included routers expanded (FastAPI >= 0.16x
    keeps included routers whole in ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        for route in app.routes:  # type: ignore[attr-defined]
            yield getattr(route, "path", ""), route
        return
    for context in iter_route_contexts(app.routes):  # type: ignore[attr-defined]
        yield context.path or "", context.original_route


def _routes(app: object) -> Iterator[tuple[str, str, object]]:
    for path, route in _flat_routes(app):
        if isinstance(route, Mount):
            continue
        methods = getattr(route, "methods", None) or set()
        for method in sorted(methods):
            if method != "HEAD" or "GET" not in methods:  # Starlette adds HEAD to every GET
                yield method, path, route


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
            (method, path)
            for method, path, route in _routes(client.app)
            if isinstance(route, APIRoute) and declared_permission(route) is not None
        }
        in_matrix = {
            (item.method, _upload_template(item.path) or _template(item.path)) for item in MATRIX
        }
        assert sorted(app_routes - in_matrix) == []


def _engineer_template(path: str) -> str | None:
    """The template of an engineers' metadata, series or DICOMweb path (UIDs 2.25.1-3)."""
    if path.startswith("/dicomweb/"):
        named = path.replace("2.25.1", "{study}").replace("2.25.2", "{series}")
        named = named.replace("/frames/1", "/frames/{frames}")
        named = named.replace("/bulkdata/7FE00010", "/bulkdata/{attribute}")
        return named.replace("2.25.3", "{instance}")
    study = "/api/engineer/studies/{pseudo_study_id}"
    if not path.startswith("/api/engineer/studies/") or path.count("/") == 3:
        return None
    if "/series/" in path:
        series = f"{study}/series/{{pseudo_series_uid}}"
        return f"{series}/archive" if path.endswith("/archive") else series
    return None if path.endswith("/archive") else study


def _upload_template(path: str) -> str | None:
    """The template of an upload API path (ids 0123456789abcdef, query dropped)."""
    path = path.split("?")[0]
    if not path.startswith("/api/uploads") or path.endswith(("/summary", "/thumbnail.png")):
        return None
    named = path.replace("/files/0123456789abcdef", "/files/{file_id}")
    return named.replace("/api/uploads/0123456789abcdef", "/api/uploads/{upload_id}")


def _template(path: str) -> str:
    """The route template a matrix path exercises."""
    templates = {
        "/account/tokens/{spare_token}/revoke": "/account/tokens/{token_id}/revoke",
        "/admin/users/{clinician}/reset": "/admin/users/{user_id}/reset",
        "/admin/users/{spare_user}/disable": "/admin/users/{user_id}/disable",
        "/admin/pacs-nodes/{pacs}/disable": "/admin/pacs-nodes/{node_id}/disable",
        "/admin/pacs-nodes/{pacs}/enable": "/admin/pacs-nodes/{node_id}/enable",
    }
    if path.startswith("/api/cases/"):
        return "/api/cases/{case_id}"
    if engineer := _engineer_template(path):
        return engineer
    if path.startswith("/api/engineer/studies/"):
        return "/api/engineer/studies/{pseudo_study_id}/archive"
    if path.startswith("/api/engineer/instances/"):
        return "/api/engineer/instances/{pseudo_instance_id}"
    if path.startswith("/engineer/studies/"):
        return "/engineer/studies/{pseudo_study_id}/series/{series_uid}/thumbnail.png"
    if path.startswith("/cases/") and path.endswith("/upload"):
        return "/cases/{case_id}/upload"
    if path.startswith("/api/uploads/") and path.endswith("/summary"):
        return "/api/uploads/{upload_id}/summary"
    if path.startswith("/api/uploads/") and path.endswith("/thumbnail.png"):
        return "/api/uploads/{upload_id}/series/{series_id}/thumbnail.png"
    if path.startswith(("/dpo/requests/", "/dpo/breaches/")):
        kind = "request_id" if path.startswith("/dpo/requests/") else "breach_id"
        return path.replace("0123456789abcdef", f"{{{kind}}}")
    return templates.get(path, path)


class TestMetricsTokenReadsOnlyMetrics:
    @pytest.mark.parametrize("item", MATRIX, ids=lambda item: item.id)
    def test_a_metrics_token_is_refused_everywhere_but_metrics(
        self, callers: tuple[Callers, TestClient], item: Row
    ) -> None:
        table, client = callers
        expected = 200 if item.path == "/metrics" else 403
        assert table.request(client, "metrics", item) == expected


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
