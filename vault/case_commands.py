"""The ``dicom-vault case`` commands: create, list, close a case; file an inbox study.

A case is open until closed. The C-STORE receiver files a push only under an
open case of the sender's organisation (else the organisation's inbox), and
an inbox study is filed (and ``ingest`` stores) only under an open case;
closing keeps what the case holds. Each command records what it did in the
access log as actor ``cli:<account>``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault import admin
from vault.audit import AuditRecord, DetailValue
from vault.catalog.models import Case, Organisation, Study
from vault.command_support import (
    NewOrganisationOption,
    OrganisationOption,
    cli_actor,
    cli_organisation,
    cli_vault,
    refusals_exit,
)
from vault.core import Vault

case_app = typer.Typer(help="Cases (implant orders): create, list, close; file inbox studies.")


def _record(
    vault: Vault,
    session: Session,
    action: str,
    kind: str,
    oid: str | None,
    detail: dict[str, DetailValue] | None = None,
) -> None:
    record = AuditRecord(cli_actor(), action, object_type=kind, object_id=oid, detail=detail or {})
    vault.audit.record(record, session=session)


@case_app.command("create")
def case_create(
    reference: str,
    organisation: OrganisationOption,
    new_organisation: NewOrganisationOption = False,
) -> None:
    """Create an open case (implant order) of an existing organisation."""
    vault = cli_vault()
    with refusals_exit(), vault.catalog.session() as session:
        org = cli_organisation(vault, session, organisation, new=new_organisation)
        case = admin.create_case(session, reference, org)
        _record(vault, session, "case.create", "case", case.id)
    typer.echo(f"case {reference} created ({case.id})")


@case_app.command("list")
def case_list(
    organisation: Annotated[
        str | None, typer.Option("--organisation", help="Only this organisation's cases.")
    ] = None,
) -> None:
    """List cases: reference, organisation, state (open or closed), studies, created."""
    vault = cli_vault()
    with refusals_exit(), vault.catalog.session() as session:
        org = admin.organisation_named(session, organisation) if organisation else None
        rows = _case_rows(session, org)
        detail: dict[str, DetailValue] = {"cases": len(rows)}
        _record(vault, session, "case.list", "query", org.id if org else None, detail)
    for case, org_name, studies in rows:
        typer.echo(
            f"{case.reference}  organisation={org_name}  state={case.status}"
            f"  studies={studies}  created={case.created_at:%Y-%m-%d}"
        )
    if not rows:
        typer.echo("no cases")


def _case_rows(session: Session, org: Organisation | None) -> list[tuple[Case, str, int]]:
    """Each case (of ``org``) with its organisation's name and its number of studies."""
    studies = (
        select(Study.case_id, func.count().label("n"))
        .where(Study.case_id.is_not(None))
        .group_by(Study.case_id)
        .subquery()
    )
    query = (
        select(Case, Organisation.name, func.coalesce(studies.c.n, 0))
        .join(Organisation, Organisation.id == Case.organisation_id)
        .outerjoin(studies, studies.c.case_id == Case.id)
        .order_by(Case.reference)
    )
    if org is not None:
        query = query.where(Case.organisation_id == org.id)
    return [(case, name, int(n)) for case, name, n in session.execute(query)]


@case_app.command("close")
def case_close(reference: str) -> None:
    """Close a case: new pushes for it go to the inbox; its studies are kept."""
    vault = cli_vault()
    with refusals_exit(), vault.catalog.session() as session:
        case = admin.close_case(session, admin.case_by_reference(session, reference))
        _record(vault, session, "case.close", "case", case.id)
    typer.echo(f"case {reference} closed")


@case_app.command("file")
def case_file(
    study: Annotated[str, typer.Argument(help="Internal study id, shown '(inbox)' by `list`.")],
    case: Annotated[str, typer.Option("--case", help="Reference of the case to file it under.")],
) -> None:
    """File a study the DICOM receiver matched to no case (the inbox) under a case."""
    vault = cli_vault()
    with refusals_exit(), vault.catalog.session() as session:
        target = admin.case_by_reference(session, case)
        one_patient = vault.settings.policy.one_patient_per_case
        admin.file_study(session, study, target, one_patient_per_case=one_patient)
        _record(vault, session, "study.file", "study", study, {"case": target.id})
    typer.echo(f"study {study} filed under case {case}")
