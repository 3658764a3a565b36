"""What the ``dicom-vault`` command groups share: their vault, their actor, refusals,
dates, and the organisation an ``--organisation NAME`` option names.

A command opens the vault from the environment's settings (invalid ones are
named, one line each, with exit status 2), acts in the access log as the
person who ran it (:func:`cli_actor`), and turns a refusal into its reason on
standard error and exit status 2 (:func:`refusals_exit`).

The actor is ``cli:<account>``, the operating-system login that invoked the
command: ``SUDO_USER`` under sudo (the person, not ``root`` or the service
account sudo switched to), else the effective user's name in the password
database, else ``#<uid>`` (a container's uid without an entry).
``os.getlogin()`` is not used: it reads the controlling terminal's login
record, which cron and systemd units do not have (``OSError``) and which may
name another user. A shared service account adds the person's name with
``--operator NAME`` (or ``DICOM_VAULT_OPERATOR``) after the account, never
instead of it: ``cli:<account>;operator=<name>``. Names are 1 to 32 letters,
digits or ``._@$+-`` (no blanks, control characters or separators), so an
actor fits the catalog's 80-character actor columns and an ATNA UserID.
Both names are the account's own word (whoever can run the CLI holds the
vault's keys): they attribute work done in good faith, and are no defence
against an operator who lies about them.

An ``--organisation NAME`` must name an existing organisation unless the
command is also given ``--new-organisation`` (:func:`cli_organisation`): a
typo is refused with the close matches instead of becoming a second one.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from vault import admin
from vault.audit import AuditRecord
from vault.catalog.models import Organisation
from vault.core import Vault, open_vault
from vault.errors import InvalidInput, NotFound, VaultError
from vault.settings import InvalidSettings, Settings, load_settings

OPERATOR_VARIABLE = "DICOM_VAULT_OPERATOR"
_NAME = re.compile(r"[\w.@$+-]{1,32}")


def operator_name(value: str | None) -> str | None:
    """A checked ``--operator`` value, kept as ``DICOM_VAULT_OPERATOR`` for
    :func:`cli_actor` (the callback of :data:`OperatorOption`).

    Raises:
        typer.BadParameter: blank, too long, or a character outside ``_NAME``.
    """
    if value is None:
        return None
    if not _NAME.fullmatch(value):
        raise typer.BadParameter("1 to 32 letters, digits or ._@$+- (no blanks or separators)")
    os.environ[OPERATOR_VARIABLE] = value
    return value


OperatorOption = Annotated[
    str | None,
    typer.Option(
        "--operator",
        envvar=OPERATOR_VARIABLE,
        callback=operator_name,
        help="Who operates a shared account; recorded after the OS account, not instead.",
    ),
]
OrganisationOption = Annotated[
    str, typer.Option("--organisation", help="Organisation name (see admin list-organisations).")
]
NewOrganisationOption = Annotated[
    bool,
    typer.Option(
        "--new-organisation", help="Create the --organisation if no organisation has that name."
    ),
]


def os_account(environ: Mapping[str, str] = os.environ) -> str:
    """The login that invoked the command (see the module docstring)."""
    invoker = environ.get("SUDO_USER", "")
    if _NAME.fullmatch(invoker):
        return invoker
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"
    return name if _NAME.fullmatch(name) else f"#{uid}"


def cli_actor(environ: Mapping[str, str] = os.environ) -> str:
    """The access-log actor of the running command: ``cli:<account>``, then the
    operator (``--operator`` or ``DICOM_VAULT_OPERATOR``) if one is named.

    Raises:
        InvalidInput: the operator's name is not one (see the module docstring).
    """
    account = f"cli:{os_account(environ)}"
    operator = environ.get(OPERATOR_VARIABLE, "")
    if not operator:
        return account
    if not _NAME.fullmatch(operator):
        raise InvalidInput(f"{OPERATOR_VARIABLE} is not a name", reason="operator")
    return f"{account};operator={operator}"


def cli_settings() -> Settings:
    """The environment's settings; invalid ones are named on standard error (exit status 2)."""
    try:
        return load_settings()
    except InvalidSettings as exc:
        for problem in exc.problems:
            typer.echo(f"error: invalid configuration: {problem}", err=True)
        raise typer.Exit(code=2) from None


def cli_vault() -> Vault:
    """The vault the environment's settings describe."""
    return open_vault(cli_settings())


@contextmanager
def refusals_exit(*errors: type[Exception]) -> Iterator[None]:
    """Print a refusal (``errors``, by default any :class:`VaultError`) and exit with status 2."""
    caught: tuple[type[Exception], ...] = errors or (VaultError,)
    try:
        yield
    except caught as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def parse_date(value: str) -> datetime:
    """``YYYY-MM-DD`` (or an ISO date-time) as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput("dates are YYYY-MM-DD", reason="date") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def cli_organisation(
    vault: Vault, session: Session, name: str, *, new: bool, kind: str = "hospital"
) -> Organisation:
    """The organisation ``name``; with ``new``, created (as ``kind``) when missing
    and its creation recorded as ``admin.org-create``.

    Raises:
        NotFound: without ``new``, no organisation has that name; the message
            names the close matches and ``--new-organisation``.
        InvalidInput: the name is empty or longer than 200 characters.
    """
    if not name.strip() or len(name.strip()) > 200:
        raise InvalidInput("an organisation name has 1 to 200 characters")
    try:
        return admin.organisation_named(session, name)
    except NotFound as exc:
        if not new:
            raise NotFound(f"{exc}; --new-organisation creates it", reason=exc.reason) from None
    organisation = admin.get_or_create_organisation(session, name.strip(), kind=kind)
    record = AuditRecord(
        cli_actor(), "admin.org-create", object_type="organisation", object_id=organisation.id
    )
    vault.audit.record(record, session=session)
    return organisation
