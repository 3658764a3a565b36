"""HTTP hardening: security headers, request size limits, and the accounts schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from tests.services.auth_env import START, AuthWorld, auth_test_settings, post_form
from vault.api.app import create_app
from vault.api.security import CSP, BodyLimit, SecurityHeaders
from vault.catalog import accounts
from vault.catalog.db import make_engine, migrate
from vault.catalog.models import Base
from vault.clock import FrozenClock
from vault.errors import TooLarge, http_status

ACCOUNT_TABLES = {table.name for table in Base.metadata.sorted_tables} & {
    "users",
    "auth_sessions",
    "api_tokens",
    "case_assignments",
    "one_time_links",
    "login_throttle",
}


class TestSecurityHeaders:
    def test_every_page_carries_the_strict_policy(self, auth_world: AuthWorld) -> None:
        for path in ("/login", "/set-password", "/healthz", "/static/vault.css", "/nowhere"):
            headers = auth_world.client.get(path).headers
            assert headers["content-security-policy"] == CSP, path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["referrer-policy"] == "no-referrer", path

    def test_policy_forbids_inline_script_framing_and_plugins(self) -> None:
        directives = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["base-uri"] == "'none'"
        assert directives["form-action"] == "'self'"

    def test_authenticated_pages_are_not_cached(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("admin@maker.example", "admin", "Maker")
        auth_world.login(auth_world.client, account)
        for path in ("/", "/admin", "/api/me"):
            assert auth_world.client.get(path).headers["cache-control"] == "no-store", path

    def test_hsts_over_tls_only(self, tmp_path: Path) -> None:
        app = create_app(auth_test_settings(tmp_path / "data"), clock=FrozenClock(START))
        with TestClient(app, base_url="https://testserver") as tls:
            assert "max-age=" in tls.get("/healthz").headers["strict-transport-security"]
            plain = TestClient(app, base_url="http://testserver")
            assert "strict-transport-security" not in plain.get("/healthz").headers

    def test_hsts_when_tls_ends_at_a_proxy(self) -> None:
        app = SecurityHeaders(_echo_app(), hsts_always=True)
        response = TestClient(app, base_url="http://testserver").post("/echo", content=b"x")
        assert "strict-transport-security" in response.headers

    def test_page_scripts_are_local_files(self, auth_world: AuthWorld) -> None:
        page = auth_world.client.get("/set-password").text
        assert '<script src="/static/set-password.js"></script>' in page
        assert "<script>" not in page
        assert auth_world.client.get("/static/set-password.js").status_code == 200

    def test_no_page_loads_its_scripts_from_a_cdn(self, auth_world: AuthWorld) -> None:
        for path in ("/docs", "/docs/oauth2-redirect", "/redoc"):
            assert auth_world.client.get(path).status_code == 404, path


class TestApiDescription:
    def test_the_description_needs_a_login(self, auth_world: AuthWorld) -> None:
        response = auth_world.client.get("/openapi.json")
        assert response.status_code == 401
        assert "paths" not in response.text

    def test_an_engineer_reads_the_description_of_the_api(self, auth_world: AuthWorld) -> None:
        account = auth_world.add_user("engineer@maker.example", "engineer", "Maker")
        auth_world.login(auth_world.client, account)
        paths = auth_world.client.get("/openapi.json").json()["paths"]
        assert "/api/cases/{case_id}" in paths
        assert "/openapi.json" not in paths


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"bytes": total}

    @app.post("/api/uploads/files")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.exception_handler(TooLarge)
    def _too_large(_request: Request, exc: TooLarge) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=http_status(exc))

    return app


def _limited(limit: int = 1000) -> TestClient:
    app = BodyLimit(_echo_app(), max_bytes=limit, overrides=[("/api/uploads", 10 * limit)])
    return TestClient(app)


def _chunks(total: int, size: int = 256) -> Iterator[bytes]:
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


class TestRequestSizeLimit:
    def test_declared_length_over_the_limit_is_refused_with_413(self) -> None:
        response = _limited().post("/echo", content=b"x" * 1001)
        assert response.status_code == 413

    def test_body_at_the_limit_is_accepted(self) -> None:
        response = _limited().post("/echo", content=b"x" * 1000)
        assert (response.status_code, response.json()) == (200, {"bytes": 1000})

    def test_streamed_body_without_length_is_counted(self) -> None:
        response = _limited().post("/echo", content=_chunks(5000))
        assert response.status_code == 413

    def test_streamed_body_within_the_limit_passes(self) -> None:
        response = _limited().post("/echo", content=_chunks(900))
        assert (response.status_code, response.json()) == (200, {"bytes": 900})

    def test_upload_paths_get_their_own_limit(self) -> None:
        client = _limited()
        assert client.post("/api/uploads/files", content=b"x" * 5000).status_code == 200
        assert client.post("/api/uploads/files", content=b"x" * 10001).status_code == 413

    def test_the_app_refuses_an_oversized_form(self, auth_world: AuthWorld) -> None:
        limit = auth_world.vault.settings.auth.max_request_bytes
        data = {"email": "a@b.example", "password": "x" * (limit + 1)}
        assert auth_world.client.post("/login", data=data).status_code == 413


class TestAccountsSchema:
    def test_migrations_create_exactly_the_account_models(self, tmp_path: Path) -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
        migrate(engine)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        ours = [d for d in diff if _table_of(d) in ACCOUNT_TABLES]
        engine.dispose()
        assert len(ACCOUNT_TABLES) == 6, accounts.__name__
        assert ours == []

    def test_downgrade_to_0001_and_back(self, tmp_path: Path) -> None:
        from sqlalchemy import inspect

        engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
        migrate(engine, "0002")
        migrate_down(engine, "0001")
        assert "users" not in inspect(engine).get_table_names()
        migrate(engine, "0002")
        assert "users" in inspect(engine).get_table_names()
        engine.dispose()


def migrate_down(engine: object, revision: str) -> None:
    from alembic import command

    from vault.catalog.db import alembic_config

    command.downgrade(alembic_config(engine), revision)  # type: ignore[arg-type]


def _table_of(diff: object) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item if isinstance(item, tuple) else ():
        table = getattr(part, "table", None)
        name = getattr(part, "name", None) if table is None else table.name
        if isinstance(part, str) and part in ACCOUNT_TABLES:
            return part
        if name in ACCOUNT_TABLES:
            return name
    return None


class TestAdminPages:
    def test_admin_creates_organisation_case_and_assignment(self, auth_world: AuthWorld) -> None:
        admin = auth_world.add_user("admin@maker.example", "admin", "Maker")
        engineer = auth_world.add_user("e@maker.example", "engineer", "Maker")
        auth_world.login(auth_world.client, admin)
        post_form(auth_world.client, "/admin/organisations", {"name": "St Elsewhere"})
        page = auth_world.client.get("/admin").text
        org_id = page.split("St Elsewhere</option>")[0].rsplit('value="', 1)[1].split('"')[0]
        form = {"reference": "ADM-1", "organisation_id": org_id}
        assert post_form(auth_world.client, "/admin/cases", form).status_code == 303
        case_id = auth_world.client.get("/api/cases").json()[0]["id"]
        form = {"case_id": case_id, "user_id": engineer.user_id}
        assert post_form(auth_world.client, "/admin/assignments", form).status_code == 303
        eng = auth_world.new_client()
        eng.cookies.set(auth_world.cookie_name, auth_world.session_cookie(engineer))
        assert eng.get(f"/api/cases/{case_id}").status_code == 200
        actions = {e.action for e in auth_world.vault.audit.events()}
        assert {"admin.org-create", "admin.case-create", "admin.assign"} <= actions

    def test_refused_admin_input_names_the_problem(self, auth_world: AuthWorld) -> None:
        admin = auth_world.add_user("admin@maker.example", "admin", "Maker")
        auth_world.login(auth_world.client, admin)
        form = {"email": "x@y.example", "role": "wizard", "organisation_id": admin.organisation_id}
        response = post_form(auth_world.client, "/admin/users", form)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("text/html")
        assert 'role="alert">the role must be one of' in response.text
