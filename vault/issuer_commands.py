"""The ``dicom-vault admin`` issuer commands: the patient-ID issuers of an organisation.

``add-issuer ISSUER --organisation NAME`` registers an Issuer of Patient ID
(0010,0021) value the organisation's own systems write, ``remove-issuer``
unregisters it, ``list-issuers`` shows them (:mod:`vault.issuers` says what a
registration does to pseudonyms). Each change is recorded in the access log
(actor ``cli``, the organisation's id and the registration's id, never the
issuer); the listing, which holds no personal data, is not, like
``list-organisations``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import admin, issuers
from vault.audit import AuditRecord
from vault.catalog.models import Organisation, OrganisationIssuer
from vault.command_support import OrganisationOption, cli_actor, cli_vault, refusals_exit
from vault.core import Vault

IssuerArgument = Annotated[
    str, typer.Argument(help="The Issuer of Patient ID as the organisation's systems write it.")
]


def _record(vault: Vault, session: Session, action: str, row: OrganisationIssuer) -> None:
    count = len(issuers.issuers_of(session, row.organisation_id))
    record = AuditRecord(
        cli_actor(),
        action,
        object_type="organisation",
        object_id=row.organisation_id,
        detail={"registration": row.id, "issuers": count},
    )
    vault.audit.record(record, session=session)


def _change(
    issuer: str,
    organisation: str,
    change: Callable[[Session, Organisation, str], OrganisationIssuer],
    action: str,
) -> tuple[OrganisationIssuer, Organisation]:
    """Apply ``change`` to the named organisation's issuers and record ``action``."""
    vault = cli_vault()
    try:
        with refusals_exit(), vault.catalog.session() as session:
            org = admin.organisation_named(session, organisation)
            row = change(session, org, issuer)
            _record(vault, session, action, row)
    finally:
        vault.close()
    return row, org


def add_issuer(issuer: IssuerArgument, organisation: OrganisationOption) -> None:
    """Register ISSUER as the organisation's own: its patient IDs with this issuer, or with
    none, then share one pseudonym and date offset per patient (for studies
    de-identified from now on)."""
    row, org = _change(issuer, organisation, issuers.add_issuer, "admin.issuer-add")
    typer.echo(f"issuer {row.issuer!r} registered for {org.name}")


def remove_issuer(issuer: IssuerArgument, organisation: OrganisationOption) -> None:
    """Unregister ISSUER from the organisation: IDs with it become a domain of their own
    (for studies de-identified from now on)."""
    row, org = _change(issuer, organisation, issuers.remove_issuer, "admin.issuer-remove")
    typer.echo(f"issuer {row.issuer!r} unregistered from {org.name}")


def list_issuers(
    organisation: Annotated[
        str | None, typer.Option("--organisation", help="Only this organisation's issuers.")
    ] = None,
) -> None:
    """List registered patient-ID issuers: organisation, issuer, registered date."""
    vault = cli_vault()
    try:
        with refusals_exit(), vault.catalog.read_session() as session:
            org = admin.organisation_named(session, organisation) if organisation else None
            query = select(OrganisationIssuer, Organisation.name).join(
                Organisation, Organisation.id == OrganisationIssuer.organisation_id
            )
            if org is not None:
                query = query.where(OrganisationIssuer.organisation_id == org.id)
            rows = list(
                session.execute(query.order_by(Organisation.name, OrganisationIssuer.issuer))
            )
    finally:
        vault.close()
    for row, name in rows:
        typer.echo(f"{name}  issuer={row.issuer!r}  registered={row.created_at:%Y-%m-%d}")
    if not rows:
        typer.echo(
            "no issuers registered (add one with: dicom-vault admin add-issuer ISSUER"
            " --organisation NAME)"
        )
