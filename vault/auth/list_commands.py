"""The ``dicom-vault admin`` listings: organisations, users, API tokens.

A listing shows what an operator needs to act (the id ``revoke-token``
takes, whether an invited user has enrolled) and nothing secret: no password
hash, sealed TOTP secret or token digest is read. User e-mail addresses are
personal data, so ``list-users`` and ``list-tokens`` are recorded in the
access log (actor ``cli:<account>``, counts only); ``list-organisations`` shows no
personal data and, like ``pacs list``, is not.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import func, select
from sqlalchemy.orm import Mapped, Session

from vault import admin
from vault.audit import AuditRecord, DetailValue
from vault.catalog.accounts import ApiToken, User
from vault.catalog.models import Case, Organisation, PacsNode
from vault.command_support import cli_actor, cli_vault, refusals_exit
from vault.core import Vault


def _record(
    vault: Vault, session: Session, action: str, kind: str, oid: str | None, n: int
) -> None:
    detail: dict[str, DetailValue] = {"rows": n}
    record = AuditRecord(cli_actor(), action, object_type=kind, object_id=oid, detail=detail)
    vault.audit.record(record, session=session)


def _day(moment: datetime | None, empty: str = "-") -> str:
    return f"{moment:%Y-%m-%d}" if moment else empty


def list_organisations() -> None:
    """List organisations: name, kind, users, cases, PACS nodes, retention, created."""
    vault = cli_vault()
    with vault.catalog.read_session() as session:
        users, cases, nodes = (
            _count_by_organisation(session, column)
            for column in (User.organisation_id, Case.organisation_id, PacsNode.organisation_id)
        )
        organisations = list(session.scalars(select(Organisation).order_by(Organisation.name)))
    for org in organisations:
        typer.echo(
            f"{org.name}  kind={org.kind}  users={users.get(org.id, 0)}"
            f"  cases={cases.get(org.id, 0)}  pacs-nodes={nodes.get(org.id, 0)}"
            f"  retention-days={org.retention_days}  created={_day(org.created_at)}  id={org.id}"
        )
    if not organisations:
        typer.echo(
            "no organisations (create-user, case create or pacs add with --new-organisation)"
        )


def _count_by_organisation(session: Session, column: Mapped[str]) -> dict[str, int]:
    """How many rows of ``column``'s table each organisation has."""
    rows = session.execute(select(column, func.count()).group_by(column))
    return {org_id: int(n) for org_id, n in rows}


def list_users(
    organisation: Annotated[
        str | None, typer.Option("--organisation", help="Only this organisation's users.")
    ] = None,
) -> None:
    """List users: e-mail, role, organisation, enabled, enrolment, last login (recorded)."""
    vault = cli_vault()
    with refusals_exit(), vault.catalog.session() as session:
        org = admin.organisation_named(session, organisation) if organisation else None
        query = select(User, Organisation.name).join(
            Organisation, Organisation.id == User.organisation_id
        )
        if org is not None:
            query = query.where(User.organisation_id == org.id)
        rows = list(session.execute(query.order_by(User.email)))
        _record(vault, session, "admin.user-list", "query", org.id if org else None, len(rows))
    for user, org_name in rows:
        typer.echo(
            f"{user.email}  role={user.role}  organisation={org_name}"
            f"  {'disabled' if user.disabled else 'enabled'}  enrolment={_enrolment(user)}"
            f"  last-login={_day(user.last_login_at, 'never')}  id={user.id}"
        )
    if not rows:
        typer.echo("no users")


def _enrolment(user: User) -> str:
    """``invited`` (no password yet), ``password-set`` (no second factor yet) or ``enrolled``."""
    if user.password_hash is None:
        return "invited"
    return "enrolled" if user.totp_confirmed_at is not None else "password-set"


def list_tokens(
    email: Annotated[str | None, typer.Argument(help="Only this user's tokens.")] = None,
) -> None:
    """List API tokens (never their secret): id, owner, scope, name, case, dates, state.

    The id is what revoke-token takes. The listing is recorded.
    """
    vault = cli_vault()
    with refusals_exit(), vault.catalog.session() as session:
        owner = admin.user_by_email(session, email) if email else None
        query = (
            select(ApiToken, User.email, Case.reference)
            .join(User, User.id == ApiToken.user_id)
            .outerjoin(Case, Case.id == ApiToken.case_id)
        )
        if owner is not None:
            query = query.where(ApiToken.user_id == owner.id)
        rows = list(session.execute(query.order_by(ApiToken.created_at)))
        kind, oid = ("user", owner.id) if owner else ("query", None)
        _record(vault, session, "token.list", kind, oid, len(rows))
    now = vault.clock.now()
    for token, owner_email, case_ref in rows:
        typer.echo(
            f"{token.id}  owner={owner_email}  scope={token.scope}  name={json.dumps(token.name)}"
            f"  case={case_ref or '-'}  created={_day(token.created_at)}"
            f"  expires={_day(token.expires_at)}  revoked={_day(token.revoked_at)}"
            f"  state={_token_state(token, now)}  last-used={_day(token.last_used_at, 'never')}"
        )
    if not rows:
        typer.echo("no tokens")


def _token_state(token: ApiToken, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token.expires_at <= now else "active"
