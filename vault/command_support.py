"""What the ``dicom-vault`` command groups share: their vault, their actor, refusals,
dates, and the organisation an ``--organisation NAME`` option names.

A command opens the vault from the environment's settings (invalid ones are
named, one line each, with exit status 2), acts as ``cli``
in the access log, and turns a refusal into its reason on standard error and
exit status 2 (:func:`refusals_exit`).

An ``--organisation NAME`` must name an existing organisation unless the
command is also given ``--new-organisation`` (:func:`cli_organisation`): a
typo is refused with the close matches instead of becoming a second one.
"""

from __future__ import annotations

from collections.abc import Iterator
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

ACTOR = "cli"

OrganisationOption = Annotated[
    str, typer.Option("--organisation", help="Organisation name (see admin list-organisations).")
]
NewOrganisationOption = Annotated[
    bool,
    typer.Option(
        "--new-organisation", help="Create the --organisation if no organisation has that name."
    ),
]


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
        ACTOR, "admin.org-create", object_type="organisation", object_id=organisation.id
    )
    vault.audit.record(record, session=session)
    return organisation
