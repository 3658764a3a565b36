"""The ``dicom-vault admin`` commands: users, password links, assignments, tokens,
the listings of organisations, users and tokens (:mod:`vault.auth.list_commands`),
and organisations' patient-ID issuers (:mod:`vault.issuer_commands`).

Tokens are an engineer's (``create-token``, scope ``read:pseudonymised``) or
an administrator's for a Prometheus scraper (``metrics-token``, scope
``metrics``: ``GET /metrics`` and nothing else); ``revoke-token`` ends either.

Each command opens the vault, does one thing, records it in the access log as
actor ``cli:<account>`` and prints what the operator must hand over (a one-time link or
a token) exactly once. Secrets are printed to standard output only, never
logged.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from vault import admin
from vault.audit import AuditRecord, DetailValue
from vault.auth.links import base_url, link_url
from vault.auth.list_commands import list_organisations, list_tokens, list_users
from vault.auth.login import Authenticator
from vault.auth.permissions import CaseAction, Principal, can_access_case
from vault.catalog.accounts import User
from vault.command_support import (
    NewOrganisationOption,
    OrganisationOption,
    cli_actor,
    cli_organisation,
    cli_settings,
)
from vault.core import Vault, open_vault
from vault.errors import InvalidInput, VaultError
from vault.issuer_commands import add_issuer, list_issuers, remove_issuer

admin_app = typer.Typer(
    help="Accounts: organisations, users, password links, case assignments, API tokens;"
    " organisations' patient-ID issuers."
)
admin_app.command("list-organisations")(list_organisations)
admin_app.command("list-users")(list_users)
admin_app.command("list-tokens")(list_tokens)
admin_app.command("add-issuer")(add_issuer)
admin_app.command("remove-issuer")(remove_issuer)
admin_app.command("list-issuers")(list_issuers)


def _open() -> tuple[Vault, Authenticator]:
    vault = open_vault(cli_settings())
    return vault, Authenticator(vault)


def _fail(exc: VaultError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


def _record(
    vault: Vault,
    session: Session,
    action: str,
    kind: str,
    oid: str,
    detail: dict[str, DetailValue] | None = None,
) -> None:
    record = AuditRecord(cli_actor(), action, object_type=kind, object_id=oid, detail=detail or {})
    vault.audit.record(record, session=session)


@admin_app.command("create-user")
def create_user(
    email: str,
    role: Annotated[str, typer.Option(help="clinician, engineer, dpo or admin.")],
    organisation: OrganisationOption,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    new_organisation: NewOrganisationOption = False,
) -> None:
    """Create a user of an existing organisation and print a one-time link to set a
    password and enrol TOTP."""
    vault, auth = _open()
    try:
        password_hash = auth.passwords.hash(_read_password()) if password_stdin else None
        kind = "hospital" if role == "clinician" else "manufacturer"
        with vault.catalog.session() as session:
            org = cli_organisation(vault, session, organisation, new=new_organisation, kind=kind)
            user = admin.create_user(session, email, role, org, password_hash=password_hash)
            token = None if password_stdin else auth.links.issue(session, user.id, "invite")
            _record(vault, session, "admin.user-create", "user", user.id)
    except VaultError as exc:
        raise _fail(exc) from exc
    finally:
        vault.close()
    typer.echo(f"user {user.email} created ({user.id}), role {role}")
    if token is None:
        typer.echo(f"log in at {base_url(vault.settings)}/login to enrol the second factor")
    else:
        _print_link(vault, token)


def _read_password() -> str:
    return sys.stdin.readline().rstrip("\r\n")


def _print_link(vault: Vault, token: str) -> None:
    hours = vault.settings.auth.link_valid_hours
    typer.echo(f"one-time link (valid {hours} h, works once):")
    typer.echo(link_url(vault.settings, token))


@admin_app.command("reset-password")
def reset_password(
    email: str,
    reset_totp: Annotated[
        bool, typer.Option("--reset-totp", help="Also require a new TOTP enrolment.")
    ] = False,
) -> None:
    """Print a one-time link to set a new password (sessions end when it is used)."""
    vault, auth = _open()
    try:
        with vault.catalog.session() as session:
            user = admin.user_by_email(session, email)
            if reset_totp:
                user.totp_sealed = user.totp_confirmed_at = user.totp_last_step = None
                auth.sessions.end_all(session, user.id)
            token = auth.links.issue(session, user.id, "reset")
            _record(vault, session, "admin.password-reset", "user", user.id)
    except VaultError as exc:
        raise _fail(exc) from exc
    finally:
        vault.close()
    _print_link(vault, token)


@admin_app.command("assign")
def assign(case_ref: str, email: str) -> None:
    """Give case CASE_REF to the engineer EMAIL (arguments: CASE_REF EMAIL)."""
    vault, _ = _open()
    try:
        with vault.catalog.session() as session:
            case = admin.case_by_reference(session, case_ref)
            admin.assign_case(session, case, admin.user_by_email(session, email))
            _record(vault, session, "admin.assign", "case", case.id)
    except VaultError as exc:
        raise _fail(exc) from exc
    finally:
        vault.close()
    typer.echo(f"{email} assigned to case {case_ref}")


@admin_app.command("create-token")
def create_token(
    email: str,
    name: Annotated[str, typer.Option(help="What the token is for (shown in lists).")] = "cli",
    case: Annotated[str | None, typer.Option(help="Limit to this case reference.")] = None,
    days: Annotated[int | None, typer.Option(help="Lifetime in days.")] = None,
) -> None:
    """Create an API token (read:pseudonymised) for an engineer and print it once."""
    _issue_token(email, scope="read:pseudonymised", name=name, days=days, case_ref=case)


@admin_app.command("metrics-token")
def metrics_token(
    email: str,
    days: Annotated[
        int | None,
        typer.Option(
            help="Lifetime in days (auth.token_default_days; auth.token_max_days at most)."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="What the token is for.")] = "prometheus",
) -> None:
    """A token for a Prometheus scraper (GET /metrics only), owned by administrator EMAIL.

    It is printed once; revoke it with revoke-token.
    """
    _issue_token(email, scope="metrics", name=name, days=days)


def _issue_token(
    email: str, *, scope: str, name: str, days: int | None, case_ref: str | None = None
) -> None:
    """Issue a ``scope`` token to ``email`` (limited to ``case_ref``), record it, print it once."""
    vault, auth = _open()
    try:
        with vault.catalog.session() as session:
            user = admin.user_by_email(session, email)
            case_id = _token_case(session, user, case_ref) if case_ref else None
            token, secret = auth.tokens.issue(
                session, user, name=name, scope=scope, case_id=case_id, days=days
            )
            _record(vault, session, "token.create", "token", token.id, {"scope": scope})
    except VaultError as exc:
        raise _fail(exc) from exc
    finally:
        vault.close()
    typer.echo(f"token {token.id} ({scope}) expires {token.expires_at.date()}; shown only now:")
    typer.echo(secret)


def _token_case(session: Session, user: User, case_ref: str) -> str:
    """The id of case ``case_ref``, which ``user`` must be assigned to."""
    case_id = admin.case_by_reference(session, case_ref).id
    owner = Principal(user.id, user.organisation_id, user.role, "session")
    if not can_access_case(owner, case_id, CaseAction.READ_PSEUDONYMISED, session=session):
        raise InvalidInput("the engineer is not assigned to this case")
    return case_id


@admin_app.command("revoke-token")
def revoke_token(token_id: str) -> None:
    """Revoke an API token by its id."""
    vault, auth = _open()
    try:
        with vault.catalog.session() as session:
            auth.tokens.revoke(session, token_id)
            _record(vault, session, "token.revoke", "token", token_id)
    except VaultError as exc:
        raise _fail(exc) from exc
    finally:
        vault.close()
    typer.echo(f"token {token_id} revoked")
