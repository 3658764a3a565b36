"""Login pages: password, TOTP code and enrolment, one-time password links, logout.

The login and set-password forms are public; before any session exists they
are protected from cross-site posting by a double-submit nonce (a cookie and
a hidden field that must match). Every other form carries the session's CSRF
token, checked by :mod:`vault.auth.guard`.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from markupsafe import Markup

from vault.api.pages import STATIC_DIR, render
from vault.auth import totp
from vault.auth.digests import new_secret, same
from vault.auth.guard import LoginRequired, authenticator, remote_of, require, session_cookie
from vault.auth.login import Outcome
from vault.auth.permissions import Permission, Principal
from vault.auth.sessions import cookie_name
from vault.errors import InvalidInput

router = APIRouter(tags=["auth"], include_in_schema=False)
FORM_NONCE = "vault_form"


def _nonce_cookie(request: Request) -> str:
    """The login forms' nonce cookie: ``__Host-`` when secure, as the session's, so that
    no other host of the domain can plant one and defeat the forms' CSRF check."""
    secure = request.app.state.vault.settings.auth.cookie_secure
    return f"__Host-{FORM_NONCE}" if secure else FORM_NONCE


SecondFactor = Annotated[Principal, Depends(require(Permission.SECOND_FACTOR, page=True))]
Account = Annotated[Principal, Depends(require(Permission.ACCOUNT, page=True))]

# The pages a login may lead back to (``next``): same-site paths only, of
# known pages; a case page carries the case id (never PHI) and nothing else.
_NEXT_PAGES = re.compile(r"/(?:upload|engineer|account/tokens|cases/[0-9a-f]{32}/upload)?")
NextQuery = Annotated[str, Query(alias="next", max_length=200)]
NextForm = Annotated[str, Form(alias="next", max_length=200)]


def safe_next(value: str | None) -> str:
    """``value`` if it is a relative path of a known page, else "" (go home).

    Strict: one leading ``/`` (no ``//`` host, no scheme, no backslash), no
    query or fragment, and only the page paths of :data:`_NEXT_PAGES`."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return ""
    if any(char in value for char in "\\:?#%@") or not _NEXT_PAGES.fullmatch(value):
        return ""
    return value


def _with_next(path: str, next_page: str) -> str:
    """``path`` carrying ``next_page`` (already checked) as its query, if any."""
    return f"{path}?next={quote(next_page, safe='/')}" if next_page and next_page != "/" else path


_REFUSALS = {
    "credentials": ("E-mail or password not accepted.", 401),
    "code": ("This code was not accepted. Wait for the next one and try again.", 401),
    "locked": ("Too many attempts. Try again later.", 429),
}


def _secure(request: Request) -> bool:
    return request.app.state.vault.settings.auth.cookie_secure


def _set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name, value, httponly=True, secure=_secure(request), samesite="strict", path="/"
    )


def _with_nonce(request: Request, page: str, *, status_code: int = 200, **ctx: object) -> Response:
    """A public form page with a fresh double-submit nonce (cookie + field)."""
    nonce = new_secret()
    response = render(request, page, status_code=status_code, form_nonce=nonce, **ctx)
    _set_cookie(response, request, _nonce_cookie(request), nonce)
    return response


def _nonce_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(_nonce_cookie(request))
    return bool(cookie) and same(cookie or "", submitted)


def _redirect(request: Request, to: str, cookie: str | None = None) -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    if cookie is not None:
        _set_cookie(response, request, cookie_name(request.app.state.vault.settings.auth), cookie)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next_page: NextQuery = "") -> Response:
    return _with_nonce(request, "login.html", next_page=safe_next(next_page))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    email: Annotated[str, Form(max_length=254)],
    password: Annotated[str, Form(max_length=1024)],
    form_nonce: Annotated[str, Form(max_length=128)] = "",
    next_page: NextForm = "",
) -> Response:
    back = safe_next(next_page)
    if not _nonce_ok(request, form_nonce):
        return _with_nonce(
            request, "login.html", status_code=403, error="Reload and try again.", next_page=back
        )
    outcome = authenticator(request).password_step(email, password, remote_of(request))
    if outcome.cookie is None:
        return _refused(request, outcome, "login.html", back)
    step = "/enrol" if outcome.stage == "enrol" else "/login/totp"
    return _redirect(request, _with_next(step, back), outcome.cookie)


def _refused(request: Request, outcome: Outcome, page: str, back: str = "") -> Response:
    if outcome.refusal == "expired":
        return _redirect(request, _with_next("/login", back))
    message, status = _REFUSALS[outcome.refusal or "credentials"]
    if page == "login.html":
        return _with_nonce(request, page, status_code=status, error=message, next_page=back)
    return render(request, page, status_code=status, error=message, next_page=back)


@router.get("/login/totp", response_class=HTMLResponse)
def totp_page(request: Request, principal: SecondFactor, next_page: NextQuery = "") -> Response:
    back = safe_next(next_page)
    if principal.stage == "enrol":
        return _redirect(request, _with_next("/enrol", back))
    return render(request, "totp.html", next_page=back)


@router.post("/login/totp", response_class=HTMLResponse)
def totp_submit(
    request: Request,
    principal: SecondFactor,
    code: Annotated[str, Form(max_length=16)],
    next_page: NextForm = "",
) -> Response:
    back = safe_next(next_page)
    cookie = session_cookie(request) or ""
    outcome = authenticator(request).totp_step(cookie, code, remote_of(request))
    if outcome.cookie is None:
        return _refused(request, outcome, "totp.html", back)
    return _redirect(request, back or "/", outcome.cookie)


@router.get("/enrol", response_class=HTMLResponse)
def enrol_page(request: Request, principal: SecondFactor, next_page: NextQuery = "") -> Response:
    return _enrol_form(request, back=safe_next(next_page))


def _enrol_form(
    request: Request, *, status_code: int = 200, error: str | None = None, back: str = ""
) -> Response:
    enrolment = authenticator(request).enrolment(session_cookie(request) or "")
    if enrolment is None:
        return _redirect(request, _with_next("/login", back))
    grouped = " ".join(enrolment.secret[i : i + 4] for i in range(0, len(enrolment.secret), 4))
    qr = Markup(totp.qr_svg(enrolment.uri))  # noqa: S704 (SVG made here from our own URI)
    return render(
        request,
        "enrol.html",
        status_code=status_code,
        error=error,
        qr_svg=qr,
        secret=grouped,
        next_page=back,
    )


@router.post("/enrol", response_class=HTMLResponse)
def enrol_submit(
    request: Request,
    principal: SecondFactor,
    code: Annotated[str, Form(max_length=16)],
    next_page: NextForm = "",
) -> Response:
    back = safe_next(next_page)
    cookie = session_cookie(request) or ""
    outcome = authenticator(request).confirm_enrolment(cookie, code, remote_of(request))
    if outcome.cookie is not None:
        return _redirect(request, back or "/", outcome.cookie)
    if outcome.refusal == "expired":
        return _redirect(request, _with_next("/login", back))
    message, status = _REFUSALS[outcome.refusal or "code"]
    return _enrol_form(request, status_code=status, error=message, back=back)


@router.get("/set-password", response_class=HTMLResponse)
def set_password_page(request: Request) -> Response:
    return _set_password_form(request)


def _set_password_form(request: Request, *, status_code: int = 200, error: str = "") -> Response:
    min_length = request.app.state.vault.settings.auth.password_min_length
    return _with_nonce(
        request, "set_password.html", status_code=status_code, error=error, min_length=min_length
    )


@router.post("/set-password", response_class=HTMLResponse)
def set_password(
    request: Request,
    token: Annotated[str, Form(max_length=128)],
    password: Annotated[str, Form(max_length=1024)],
    password_confirm: Annotated[str, Form(max_length=1024)],
    form_nonce: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    if not _nonce_ok(request, form_nonce):
        return _set_password_form(request, status_code=403, error="Reload and try again.")
    if password != password_confirm:
        return _set_password_form(request, status_code=422, error="The passwords differ.")
    try:
        done = authenticator(request).set_password(token, password, remote_of(request))
    except InvalidInput as exc:
        return _set_password_form(request, status_code=422, error=str(exc))
    if not done:
        message = "This link is not valid any more. Ask an administrator for a new one."
        return _set_password_form(request, status_code=400, error=message)
    return _with_nonce(request, "login.html", notice="Password set. Please log in.")


@router.post("/logout")
def logout(request: Request, principal: Account) -> Response:
    return _end_session(request, principal)


@router.post("/login/cancel")
def cancel_login(request: Request, principal: SecondFactor) -> Response:
    """End a login half-way (password given, code not yet): on a shared computer
    the next person finds the password step again, not the code step."""
    return _end_session(request, principal)


def _end_session(request: Request, principal: Principal) -> Response:
    authenticator(request).logout(session_cookie(request) or "", principal, remote_of(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        cookie_name(request.app.state.vault.settings.auth),
        httponly=True,
        secure=_secure(request),
        samesite="strict",
        path="/",
    )
    return response


def _to_login(request: Request, _exc: Exception) -> Response:
    """To the login page, which leads back to the page asked for (a known
    page only, by its path: a case page carries its case id, no PHI)."""
    back = safe_next(request.url.path) if request.method == "GET" else ""
    return RedirectResponse(_with_next("/login", back), status_code=303)


def install_accounts(app: FastAPI) -> None:
    """Add the login, account and admin pages, their static files and the
    redirect of anonymous page visitors to the login page."""
    from vault.api import routes_account, routes_admin

    app.include_router(router)
    app.include_router(routes_account.router)
    app.include_router(routes_admin.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(LoginRequired, _to_login)
