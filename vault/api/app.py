"""The FastAPI application factory and the one VaultError-to-HTTP handler.

Refusals are JSON for API clients; a browser's page navigation gets the same
status as an HTML page (:mod:`vault.api.error_pages`), and so does an unknown
page address (FastAPI's own 404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from crypto.errors import CryptoError
from dicom_ingest import upload_api, upload_page
from vault.api import (
    routes_dicomweb,
    routes_dicomweb_bulk,
    routes_engineer,
    routes_engineer_page,
    routes_metrics,
)
from vault.api.error_pages import error_page, wants_page
from vault.api.refusals import record_refusal
from vault.api.routes_auth import install_accounts
from vault.api.routes_dpo import router as dpo_router
from vault.api.routes_dpo_breaches import router as breach_router
from vault.api.security import install_security
from vault.auth import Permission, require
from vault.clock import Clock
from vault.core import open_vault
from vault.errors import VaultError, http_status
from vault.readiness import OK as READY
from vault.readiness import ReadinessProbe
from vault.settings import Settings, load_settings
from vault.settle import StudySettledHooks


def _error_response(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, VaultError | CryptoError):
        raise TypeError("only project errors are mapped here")
    record_refusal(request, http_status(exc), exc.reason)
    if wants_page(request):
        return error_page(request, http_status(exc), str(exc))
    return JSONResponse({"error": exc.reason, "detail": str(exc)}, status_code=http_status(exc))


async def _unknown_page(request: Request, exc: Exception) -> Response:
    """An unknown page address as a page; every other HTTP exception as FastAPI answers it."""
    if not isinstance(exc, HTTPException):
        raise TypeError("only HTTP exceptions are mapped here")
    if exc.status_code == 404 and wants_page(request):
        return error_page(request, 404, None)
    return await http_exception_handler(request, exc)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    settle_hooks: StudySettledHooks | None = None,
) -> FastAPI:
    """The service's web application for ``settings`` (``clock``: tests' time).

    ``settle_hooks`` are told about every study an upload's completion settles
    (de-identification registers itself there).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.vault = open_vault(settings, clock=clock)
        yield
        app.state.vault.close()

    app = FastAPI(
        title="dicom-vault",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settle_hooks = settle_hooks or StudySettledHooks()
    app.add_exception_handler(VaultError, _error_response)
    app.add_exception_handler(CryptoError, _error_response)
    app.add_exception_handler(HTTPException, _unknown_page)
    install_security(app, settings)
    install_accounts(app)
    app.include_router(routes_engineer.router)
    app.include_router(routes_dicomweb.router)
    app.include_router(routes_dicomweb_bulk.router)
    app.include_router(dpo_router)
    app.include_router(breach_router)
    app.include_router(routes_engineer_page.router)
    app.include_router(upload_page.router)
    app.include_router(upload_api.router)
    app.include_router(routes_metrics.router)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    def readyz(request: Request) -> JSONResponse:
        """Readiness: the catalog, the object store and the key provider answer (503 if not)."""
        checks = _probe(request.app).check()
        ready = all(outcome == READY for outcome in checks.values())
        body = {"status": "ready" if ready else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    _install_api_description(app)
    return app


def _install_api_description(app: FastAPI) -> None:
    """``GET /openapi.json`` for signed-in users and their API tokens.

    The interactive pages FastAPI would add (``/docs``, ``/redoc``) load their
    scripts from a CDN, which the content security policy forbids and a health-data
    service should not depend on; they are off. The description itself is what an
    engineer's script or client generator needs; it names routes, not data, but is
    kept behind a login like everything else that is not a probe or the login form.
    """

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(_ACCOUNT)])
    def openapi_description() -> dict[str, Any]:
        return app.openapi()


_ACCOUNT = require(Permission.ACCOUNT)


def _probe(app: FastAPI) -> ReadinessProbe:
    """The app's readiness probe, made for its vault on first use."""
    probe: ReadinessProbe | None = getattr(app.state, "readiness", None)
    if probe is None:
        probe = app.state.readiness = ReadinessProbe(app.state.vault)
    return probe


def create_app_from_environment() -> FastAPI:
    """The app for the settings in the environment: the factory uvicorn's worker
    processes call (``api.workers`` > 1). Each worker is a new interpreter, so
    it sets up the operational log itself, as ``serve`` did."""
    from deidentify.tasks import deidentification_hooks
    from vault.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings, settle_hooks=deidentification_hooks(settings))
