"""The FastAPI application factory and the one VaultError-to-HTTP handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from crypto.errors import CryptoError
from vault.api import routes_engineer
from vault.api.routes_auth import install_accounts
from vault.api.security import install_security
from vault.clock import Clock
from vault.core import open_vault
from vault.errors import VaultError, http_status
from vault.settings import Settings


def _error_response(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, VaultError | CryptoError):
        raise TypeError("only project errors are mapped here")
    return JSONResponse({"error": exc.reason, "detail": str(exc)}, status_code=http_status(exc))


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The service's web application for ``settings`` (``clock``: tests' time)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.vault = open_vault(settings, clock=clock)
        yield
        app.state.vault.close()

    app = FastAPI(title="dicom-vault", version="0.1.0", lifespan=lifespan)
    app.add_exception_handler(VaultError, _error_response)
    app.add_exception_handler(CryptoError, _error_response)
    install_security(app, settings)
    install_accounts(app)
    app.include_router(routes_engineer.router)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    return app
