"""Administration pages: organisations, users and invitations, PACS nodes, cases,
assignments. Every change, and every view of the lists (``admin.view``, counts
only), is recorded in the access log as the administrator.

One-time links (invitations and password resets) are shown once, on the page
answering the request that made them, and never again. A refused form (a
duplicate e-mail address, AE title or case reference, an unknown organisation)
answers the page again with the reason in plain words, its status, and the
values that were typed, as the data-protection officer's pages do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import admin
from vault.api.pages import render
from vault.api.refusals import record_refusal
from vault.auth.guard import authenticator, caller_record, require
from vault.auth.links import link_url
from vault.auth.permissions import Permission, Principal
from vault.catalog.accounts import ROLES, CaseAssignment, User
from vault.catalog.models import Case, Organisation, PacsNode
from vault.core import Vault
from vault.errors import InvalidInput, NotFound, http_status

router = APIRouter(prefix="/admin", include_in_schema=False)
Admin = Annotated[Principal, Depends(require(Permission.ADMIN, page=True))]
OrgId = Annotated[str, Form(max_length=32)]
REFUSALS = (InvalidInput, NotFound)


def _vault(request: Request) -> Vault:
    return request.app.state.vault


def _audit(
    request: Request,
    session: Session,
    principal: Principal,
    action: str,
    kind: str,
    oid: str | None,
    detail: dict[str, int] | None = None,
) -> None:
    record = caller_record(
        request, principal, action, object_type=kind, object_id=oid, detail=detail
    )
    _vault(request).audit.record(record, session=session)


def _organisation(session: Session, organisation_id: str) -> Organisation:
    organisation = session.get(Organisation, organisation_id)
    if organisation is None:
        raise NotFound("no such organisation")
    return organisation


def _user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


def _back() -> RedirectResponse:
    return RedirectResponse("/admin", status_code=303)


def _perform(
    request: Request, form: str, entered: Mapping[str, str], action: Callable[[], Response]
) -> Response:
    """``action()``, or on a refusal the page again with its reason and ``entered``
    kept in the form whose id is ``form``."""
    try:
        return action()
    except REFUSALS as exc:
        record_refusal(request, http_status(exc), exc.reason)
        return _overview(
            request, status_code=http_status(exc), error=str(exc), entered={form: dict(entered)}
        )


@router.get("", response_class=HTMLResponse)
def overview(request: Request, principal: Admin) -> Response:
    """The lists of organisations, users, PACS nodes and cases; the view is recorded."""
    return _overview(request, viewer=principal)


def _overview(
    request: Request,
    *,
    link: str | None = None,
    link_email: str = "",
    viewer: Principal | None = None,
    status_code: int | None = None,
    error: str | None = None,
    entered: Mapping[str, Mapping[str, str]] | None = None,
) -> Response:
    """The admin page; with ``viewer``, ``admin.view`` is recorded (counts only).

    ``error`` is a refusal shown above the lists with ``status_code``;
    ``entered`` holds the values typed in a refused form, by the form's id.
    """
    vault = _vault(request)
    with vault.catalog.session() as session:
        organisations = list(session.scalars(select(Organisation).order_by(Organisation.name)))
        users = list(session.scalars(select(User).order_by(User.email)))
        emails = {user.id: user.email for user in users}
        assigned: dict[str, list[str]] = {}
        for row in session.scalars(select(CaseAssignment)):
            assigned.setdefault(row.case_id, []).append(emails.get(row.user_id, "?"))
        cases = list(session.scalars(select(Case).order_by(Case.created_at.desc())))
        context = {
            "organisations": organisations,
            "org_names": {org.id: org.name for org in organisations},
            "users": users,
            "roles": ROLES,
            "pacs_nodes": list(session.scalars(select(PacsNode).order_by(PacsNode.ae_title))),
            "cases": cases,
            "assigned": assigned,
        }
        if viewer is not None:
            counts = {"users": len(users), "cases": len(cases), "organisations": len(organisations)}
            _audit(request, session, viewer, "admin.view", "query", None, counts)
    return render(
        request,
        "admin.html",
        status_code=status_code or (201 if link else 200),
        error=error,
        entered=entered or {},
        link=link,
        link_email=link_email,
        link_hours=vault.settings.auth.link_valid_hours,
        **context,
    )


@router.post("/organisations")
def add_organisation(
    request: Request,
    principal: Admin,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    kind: Annotated[str, Form(pattern="^(hospital|manufacturer)$")] = "hospital",
) -> Response:
    def create() -> Response:
        with _vault(request).catalog.session() as session:
            organisation = admin.get_or_create_organisation(session, name.strip(), kind=kind)
            _audit(request, session, principal, "admin.org-create", "organisation", organisation.id)
        return _back()

    return _perform(request, "new-organisation", {"name": name, "kind": kind}, create)


@router.post("/users", response_class=HTMLResponse)
def add_user(
    request: Request,
    principal: Admin,
    email: Annotated[str, Form(max_length=254)],
    role: Annotated[str, Form(max_length=20)],
    organisation_id: OrgId,
) -> Response:
    vault = _vault(request)

    def invite() -> Response:
        with vault.catalog.session() as session:
            organisation = _organisation(session, organisation_id)
            user = admin.create_user(session, email, role, organisation)
            token = authenticator(request).links.issue(session, user.id, "invite")
            _audit(request, session, principal, "admin.user-create", "user", user.id)
            address = user.email
        return _overview(request, link=link_url(vault.settings, token), link_email=address)

    entered = {"email": email, "role": role, "organisation_id": organisation_id}
    return _perform(request, "new-user", entered, invite)


@router.post("/users/{user_id}/reset", response_class=HTMLResponse)
def reset_link(request: Request, principal: Admin, user_id: str) -> Response:
    vault = _vault(request)
    with vault.catalog.session() as session:
        user = _user(session, user_id)
        token = authenticator(request).links.issue(session, user.id, "reset")
        _audit(request, session, principal, "admin.password-reset", "user", user.id)
        address = user.email
    return _overview(request, link=link_url(vault.settings, token), link_email=address)


@router.post("/users/{user_id}/disable")
def disable_user(request: Request, principal: Admin, user_id: str) -> Response:
    auth = authenticator(request)
    with _vault(request).catalog.session() as session:
        user = _user(session, user_id)
        user.disabled = True
        auth.sessions.end_all(session, user.id)
        auth.tokens.revoke_all(session, user.id)
        _audit(request, session, principal, "admin.user-disable", "user", user.id)
    return _back()


@router.post("/pacs-nodes")
def add_pacs_node(
    request: Request,
    principal: Admin,
    ae_title: Annotated[str, Form(max_length=16)],
    organisation_id: OrgId,
    host: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    def register() -> Response:
        with _vault(request).catalog.session() as session:
            organisation = _organisation(session, organisation_id)
            node = admin.register_pacs_node(session, ae_title, organisation, host=host or None)
            _audit(request, session, principal, "admin.pacs-create", "pacs_node", node.id)
        return _back()

    entered = {"ae_title": ae_title, "host": host, "organisation_id": organisation_id}
    return _perform(request, "new-pacs-node", entered, register)


@router.post("/pacs-nodes/{node_id}/disable")
def disable_pacs_node(request: Request, principal: Admin, node_id: str) -> Response:
    """Refuse new associations from the node (open ones run to their end)."""
    return _set_pacs_enabled(request, principal, node_id, enabled=False)


@router.post("/pacs-nodes/{node_id}/enable")
def enable_pacs_node(request: Request, principal: Admin, node_id: str) -> Response:
    return _set_pacs_enabled(request, principal, node_id, enabled=True)


def _set_pacs_enabled(
    request: Request, principal: Principal, node_id: str, *, enabled: bool
) -> Response:
    with _vault(request).catalog.session() as session:
        node = session.get(PacsNode, node_id)
        if node is None:
            raise NotFound("no such PACS node")
        node.enabled = enabled
        action = "admin.pacs-enable" if enabled else "admin.pacs-disable"
        _audit(request, session, principal, action, "pacs_node", node.id)
    return _back()


@router.post("/cases")
def add_case(
    request: Request,
    principal: Admin,
    reference: Annotated[str, Form(min_length=1, max_length=64)],
    organisation_id: OrgId,
) -> Response:
    def open_case() -> Response:
        with _vault(request).catalog.session() as session:
            organisation = _organisation(session, organisation_id)
            case = admin.create_case(session, reference.strip(), organisation)
            _audit(request, session, principal, "admin.case-create", "case", case.id)
        return _back()

    entered = {"reference": reference, "organisation_id": organisation_id}
    return _perform(request, "new-case", entered, open_case)


@router.post("/assignments")
def add_assignment(
    request: Request,
    principal: Admin,
    case_id: Annotated[str, Form(max_length=32)],
    user_id: Annotated[str, Form(max_length=32)],
) -> Response:
    def assign() -> Response:
        with _vault(request).catalog.session() as session:
            case = session.get(Case, case_id)
            if case is None:
                raise NotFound("no such case")
            admin.assign_case(session, case, _user(session, user_id))
            _audit(request, session, principal, "admin.assign", "case", case.id)
        return _back()

    return _perform(request, "assign", {"case_id": case_id, "user_id": user_id}, assign)
