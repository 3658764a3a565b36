"""A user's own pages and API: home, API tokens, who am I, cases within reach.

Case look-ups go through :func:`vault.auth.permissions.can_access_case`; a
case out of reach answers 404 exactly like an unknown one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from vault.api.pages import render
from vault.api.refusals import mark_recorded
from vault.auth.guard import authenticator, caller_record, require
from vault.auth.permissions import (
    CaseAction,
    Permission,
    Principal,
    can_access_case,
    cases_within_reach,
)
from vault.catalog.accounts import User
from vault.catalog.models import Case
from vault.core import Vault
from vault.errors import NotFound

router = APIRouter()
Account = Annotated[Principal, Depends(require(Permission.ACCOUNT, page=True))]
TokenOwner = Annotated[Principal, Depends(require(Permission.TOKENS_MANAGE, page=True))]
ApiAccount = Annotated[Principal, Depends(require(Permission.ACCOUNT))]
CaseReader = Annotated[Principal, Depends(require(Permission.CASE_READ))]


def _vault(request: Request) -> Vault:
    return request.app.state.vault


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def home(request: Request, principal: Account) -> Response:
    with _vault(request).catalog.session() as session:
        user = session.get(User, principal.user_id)
        cases = list(cases_within_reach(principal, CaseAction.READ, session=session))
        email = user.email if user is not None else ""
    return render(request, "home.html", email=email, cases=cases)


@router.get("/account/tokens", response_class=HTMLResponse, include_in_schema=False)
def tokens_page(request: Request, principal: TokenOwner) -> Response:
    return _tokens_page(request, principal)


def _tokens_page(
    request: Request, principal: Principal, *, new_token: str | None = None
) -> Response:
    vault = _vault(request)
    auth = authenticator(request)
    with vault.catalog.session() as session:
        tokens = auth.tokens.of_user(session, principal.user_id)
        cases = list(cases_within_reach(principal, CaseAction.READ_PSEUDONYMISED, session=session))
    return render(
        request,
        "tokens.html",
        status_code=201 if new_token else 200,
        tokens=tokens,
        cases=cases,
        case_refs={case.id: case.reference for case in cases},
        new_token=new_token,
        max_days=vault.settings.auth.token_max_days,
        default_days=vault.settings.auth.token_default_days,
        now=vault.clock.now(),
    )


@router.post("/account/tokens", response_class=HTMLResponse, include_in_schema=False)
def create_token(
    request: Request,
    principal: TokenOwner,
    name: Annotated[str, Form(max_length=80)],
    case_id: Annotated[str, Form(max_length=32)] = "",
    days: Annotated[int | None, Form()] = None,
) -> Response:
    vault = _vault(request)
    with vault.catalog.session() as session:
        action = CaseAction.READ_PSEUDONYMISED
        if case_id and not can_access_case(principal, case_id, action, session=session):
            raise NotFound("no such case")
        user = session.get(User, principal.user_id)
        if user is None:
            raise NotFound("no such user")
        token, secret = authenticator(request).tokens.issue(
            session, user, name=name, case_id=case_id or None, days=days
        )
        record = caller_record(
            request,
            principal,
            "token.create",
            object_type="token",
            object_id=token.id,
            detail={"scope": token.scope, "case": token.case_id},
        )
        vault.audit.record(record, session=session)
    return _tokens_page(request, principal, new_token=secret)


@router.post("/account/tokens/{token_id}/revoke", include_in_schema=False)
def revoke_token(request: Request, principal: TokenOwner, token_id: str) -> Response:
    vault = _vault(request)
    with vault.catalog.session() as session:
        authenticator(request).tokens.revoke(session, token_id, owner_id=principal.user_id)
        record = caller_record(
            request,
            principal,
            "token.revoke",
            object_type="token",
            object_id=token_id,
        )
        vault.audit.record(record, session=session)
    return RedirectResponse("/account/tokens", status_code=303)


@router.get("/api/me", tags=["account"])
def who_am_i(principal: ApiAccount) -> dict[str, str | None]:
    """The caller: user id, role, organisation, and how they authenticated."""
    return {
        "user_id": principal.user_id,
        "role": principal.role,
        "organisation_id": principal.organisation_id,
        "via": principal.via,
        "scope": principal.scope,
    }


def _case_json(case: Case) -> dict[str, str]:
    return {
        "id": case.id,
        "reference": case.reference,
        "organisation_id": case.organisation_id,
        "status": case.status,
        "created_at": case.created_at.isoformat(),
    }


@router.get("/api/cases", tags=["cases"])
def list_cases(request: Request, principal: CaseReader) -> list[dict[str, str]]:
    """The cases the caller may read."""
    vault = _vault(request)
    with vault.catalog.session() as session:
        cases = [
            _case_json(case)
            for case in cases_within_reach(principal, CaseAction.READ, session=session)
        ]
        record = caller_record(
            request,
            principal,
            "case.list",
            object_type="query",
            detail={"results": len(cases)},
        )
        vault.audit.record(record, session=session)
        return cases


@router.get("/api/cases/{case_id}", tags=["cases"])
def get_case(request: Request, principal: CaseReader, case_id: str) -> dict[str, str]:
    """One case, if the caller may read it; 404 otherwise (unknown or out of reach)."""
    vault = _vault(request)
    with vault.catalog.session() as session:
        reachable = can_access_case(principal, case_id, CaseAction.READ, session=session)
        case = session.get(Case, case_id) if reachable else None
        record = caller_record(
            request,
            principal,
            "case.read",
            outcome="success" if case is not None else "not-found",
            object_type="case",
            object_id=case_id,
        )
        vault.audit.record(record, session=session)
        found = _case_json(case) if case is not None else None
    if found is None:  # after the commit: the refusal stays on record
        mark_recorded(request)
        raise NotFound("no such case")
    return found
