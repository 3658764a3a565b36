"""Authorisation, in one place: what each role and token scope may do.

Route level: every route declares the one :class:`Permission` it needs with
``Depends(require(Permission.X))`` (:mod:`vault.auth.guard`); the declaration
is read back from the route by :func:`declared_permission`, which is how the
test suite checks that no route was left undeclared.

Object level: whether a principal may act on a case is answered by
:func:`can_access_case` alone, built on the one SQL filter
:func:`_case_filter` that :func:`cases_within_reach` also uses for listings.
A case out of reach is reported as not found (404), never as forbidden.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, Select, exists, false, select, true
from sqlalchemy.orm import Session

from vault.catalog.accounts import CaseAssignment
from vault.catalog.dsr import DsrRestriction
from vault.catalog.models import Case, Study


class Permission(StrEnum):
    SECOND_FACTOR = "second-factor"  # a pending login completing its TOTP step
    ACCOUNT = "account"  # one's own account: home page, logout, who am I
    TOKENS_MANAGE = "tokens:manage"
    CASE_READ = "case:read"
    PSEUDONYMISED_READ = "pseudonymised:read"
    UPLOAD = "upload"
    AUDIT_READ = "audit:read"
    DSR_MANAGE = "dsr:manage"  # data-subject requests and the breach register
    ADMIN = "admin"
    METRICS = "metrics"  # the operators' figures (GET /metrics): counts, no health data


class CaseAction(StrEnum):
    READ = "read"
    READ_PSEUDONYMISED = "read-pseudonymised"
    UPLOAD = "upload"
    MANAGE = "manage"


P = Permission
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "clinician": frozenset({P.ACCOUNT, P.CASE_READ, P.UPLOAD}),
    "engineer": frozenset({P.ACCOUNT, P.CASE_READ, P.PSEUDONYMISED_READ, P.TOKENS_MANAGE}),
    "dpo": frozenset({P.ACCOUNT, P.CASE_READ, P.AUDIT_READ, P.DSR_MANAGE}),
    "admin": frozenset({P.ACCOUNT, P.CASE_READ, P.AUDIT_READ, P.ADMIN, P.DSR_MANAGE, P.METRICS}),
}
# A token grants its owner's role permissions within its scope's. A role holds
# tokens of the scopes whose permissions it has all of (:func:`may_hold_scope`):
# engineers ``read:pseudonymised``, administrators ``metrics`` (a scraper's).
SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "read:pseudonymised": frozenset({P.ACCOUNT, P.CASE_READ, P.PSEUDONYMISED_READ}),
    "metrics": frozenset({P.METRICS}),
}
SCOPE_CASE_ACTIONS: dict[str, frozenset[CaseAction]] = {
    "read:pseudonymised": frozenset({CaseAction.READ, CaseAction.READ_PSEUDONYMISED}),
    "metrics": frozenset(),
}
ROLE_CASE_ACTIONS: dict[str, frozenset[CaseAction]] = {
    "clinician": frozenset({CaseAction.READ, CaseAction.UPLOAD}),
    "engineer": frozenset({CaseAction.READ, CaseAction.READ_PSEUDONYMISED}),
    "dpo": frozenset({CaseAction.READ}),
    "admin": frozenset(CaseAction),
}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user through a browser session or through an API token."""

    user_id: str
    organisation_id: str
    role: str
    via: str  # "session" or "token"
    stage: str = "full"
    token_id: str | None = None
    scope: str | None = None
    token_case_id: str | None = None

    @property
    def actor(self) -> str:
        """The access-log actor: ``token:<id>`` or ``user:<id>``."""
        return f"token:{self.token_id}" if self.token_id else f"user:{self.user_id}"


def permissions_of(principal: Principal) -> frozenset[Permission]:
    """Everything ``principal`` may do at route level."""
    if principal.stage != "full":
        return frozenset({P.SECOND_FACTOR})
    granted = ROLE_PERMISSIONS.get(principal.role, frozenset())
    if principal.via == "token":
        granted &= SCOPE_PERMISSIONS.get(principal.scope or "", frozenset())
    return granted


def may_hold_scope(role: str, scope: str) -> bool:
    """Whether a user of ``role`` may hold a token of ``scope``: the role grants
    every permission the scope carries (so the token is never empty)."""
    wanted = SCOPE_PERMISSIONS.get(scope)
    return wanted is not None and wanted <= ROLE_PERMISSIONS.get(role, frozenset())


def _case_actions(principal: Principal) -> frozenset[CaseAction]:
    actions = ROLE_CASE_ACTIONS.get(principal.role, frozenset())
    if principal.via == "token":
        actions &= SCOPE_CASE_ACTIONS.get(principal.scope or "", frozenset())
    return actions if principal.stage == "full" else frozenset()


def _case_filter(principal: Principal, action: CaseAction) -> ColumnElement[bool]:
    """The SQL condition on ``Case`` selecting the cases ``principal`` may ``action``."""
    if action not in _case_actions(principal):
        return false()
    if principal.role in ("admin", "dpo"):
        reach: ColumnElement[bool] = true()
    elif principal.role == "clinician":
        reach = Case.organisation_id == principal.organisation_id
    elif principal.role == "engineer":
        assigned = select(CaseAssignment.case_id).where(CaseAssignment.user_id == principal.user_id)
        reach = Case.id.in_(assigned)
    else:
        return false()
    if principal.token_case_id is not None:
        reach = reach & (Case.id == principal.token_case_id)
    if action is CaseAction.READ_PSEUDONYMISED:
        reach = reach & _unrestricted_case()
    return reach


def _unrestricted_case() -> ColumnElement[bool]:
    """No active restriction of processing (GDPR article 18, :mod:`vault.dsr_restriction`)
    covers a study of the case: a case holding a restricted study is withheld from
    pseudonymised reads (listings, downloads, DICOMweb, thumbnails) until it is lifted."""
    return ~exists().where(
        Study.case_id == Case.id,
        DsrRestriction.study_id == Study.id,
        DsrRestriction.lifted_at.is_(None),
    )


def can_access_case(
    principal: Principal, case_id: str, action: CaseAction, *, session: Session
) -> bool:
    """Whether ``principal`` may ``action`` case ``case_id`` (False if no such case)."""
    query = select(Case.id).where(Case.id == case_id, _case_filter(principal, action))
    return session.scalar(query) is not None


def cases_within_reach(
    principal: Principal, action: CaseAction, *, session: Session, limit: int = 500
) -> Iterable[Case]:
    """The cases ``principal`` may ``action``: the same rule as :func:`can_access_case`."""
    query = select(Case).where(_case_filter(principal, action)).order_by(Case.created_at)
    return session.scalars(query.limit(limit))


def case_ids_within_reach(principal: Principal, action: CaseAction) -> Select[tuple[str]]:
    """The ids of the cases ``principal`` may ``action``, as a subquery for other filters.

    The same rule as :func:`can_access_case`, with no limit: for searches
    that filter rows by their case in SQL (``Study.case_id.in_(...)``).
    """
    return select(Case.id).where(_case_filter(principal, action))
