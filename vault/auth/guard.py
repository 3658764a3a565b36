"""The FastAPI side of authorisation: who is asking, and may they.

Every route declares its permission with ``Depends(require(Permission.X))``
(``page=True`` for HTML pages, whose anonymous visitors are sent to the login
page instead of getting 401). The dependency identifies the caller from an
``Authorization: Bearer`` API token or the session cookie, checks the
permission, and for state-changing methods of cookie sessions checks the CSRF
token (form field ``csrf_token`` or header ``X-CSRF-Token``). Requests with a
bearer token carry no cookie and are exempt from CSRF; tokens are for tools
and never open pages. A session still waiting for its TOTP code holds only
``Permission.SECOND_FACTOR``.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request
from fastapi.dependencies.models import Dependant
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from vault.audit import AuditRecord, DetailValue
from vault.auth.login import Authenticator
from vault.auth.permissions import Permission, Principal, permissions_of
from vault.auth.sessions import cookie_name, csrf_matches
from vault.errors import NotAuthenticated, PermissionDenied

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class LoginRequired(NotAuthenticated):
    """A page needs a login: answered by a redirect to the login page."""


def authenticator(request: Request) -> Authenticator:
    """The app's :class:`Authenticator`, built on first use for the app's vault."""
    vault = request.app.state.vault
    auth: Authenticator | None = getattr(request.app.state, "auth", None)
    if auth is None or auth.vault is not vault:
        auth = Authenticator(vault)
        request.app.state.auth = auth
    return auth


def session_cookie(request: Request) -> str | None:
    return request.cookies.get(cookie_name(request.app.state.vault.settings.auth))


def remote_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def caller_record(
    request: Request,
    principal: Principal,
    action: str,
    *,
    outcome: str = "success",
    object_type: str | None = None,
    object_id: str | None = None,
    detail: Mapping[str, DetailValue] | None = None,
) -> AuditRecord:
    """The access-log record of ``action`` by the request's caller, from its address."""
    return AuditRecord(
        principal.actor,
        action,
        outcome=outcome,
        object_type=object_type,
        object_id=object_id,
        remote=remote_of(request),
        detail=dict(detail or {}),
    )


class Require:
    """The dependency that enforces one permission (see module docstring)."""

    def __init__(self, permission: Permission, *, page: bool) -> None:
        self.permission = permission
        self.page = page

    async def __call__(self, request: Request) -> Principal:
        principal = await run_in_threadpool(self._identify, request)
        request.state.caller = principal  # for the record of a refusal (vault.api.refusals)
        if self.permission not in permissions_of(principal):
            if principal.stage != "full":
                raise self._unauthenticated()
            raise PermissionDenied("not permitted for this account")
        if self.page and principal.via == "token":
            raise PermissionDenied("API tokens do not open pages")
        if request.method in UNSAFE_METHODS and principal.via == "session":
            await _check_csrf(request)
        request.state.principal = principal
        return principal

    def _identify(self, request: Request) -> Principal:
        auth = authenticator(request)
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, secret = header.partition(" ")
            found = auth.from_bearer(secret.strip()) if scheme.lower() == "bearer" else None
            if found is None:
                raise NotAuthenticated("the API token is not valid")
            return found
        cookie = session_cookie(request)
        found = auth.from_cookie(cookie) if cookie else None
        if found is None:
            raise self._unauthenticated()
        return found

    def _unauthenticated(self) -> NotAuthenticated:
        if self.page:
            return LoginRequired("please log in")
        return NotAuthenticated("authentication required")


async def _check_csrf(request: Request) -> None:
    cookie = session_cookie(request) or ""
    submitted = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if submitted is None and content_type.startswith(_FORM_TYPES):
        value = (await request.form()).get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    if not csrf_matches(cookie, submitted):
        raise PermissionDenied("the form has expired; reload the page", reason="csrf")


def require(permission: Permission, *, page: bool = False) -> Require:
    """The dependency declaring (and enforcing) that a route needs ``permission``."""
    return Require(permission, page=page)


def declared_permission(route: BaseRoute) -> Permission | None:
    """The permission ``route`` declares through :func:`require`, if any."""
    dependant: Dependant | None = getattr(route, "dependant", None)
    return _find(dependant) if dependant is not None else None


def _find(dependant: Dependant) -> Permission | None:
    if isinstance(dependant.call, Require):
        return dependant.call.permission
    for sub in dependant.dependencies:
        found = _find(sub)
        if found is not None:
            return found
    return None
