"""The ``dicom-vault dsr`` commands: data-subject requests from the command line.

Each command opens the vault, does one step of a request through
:mod:`vault.dsr` and its sibling modules (recorded on the request and in the
access log as actor ``cli:<account>``), and prints internal ids, codes and counts only.
A refused step prints its reason and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crypto.errors import CryptoError
from vault import dsr
from vault.command_support import cli_actor, cli_vault, parse_date, refusals_exit
from vault.dsr_erasure import erase
from vault.dsr_package import write_package
from vault.dsr_rectify import RECTIFIABLE, rectify
from vault.dsr_restriction import lift_restriction, restrict
from vault.dsr_search import SubjectIdentifiers, find_subject_studies
from vault.dsr_views import events_of, list_requests, studies_of
from vault.errors import VaultError

dsr_app = typer.Typer(help="Data-subject requests: access, rectification, erasure and the rest.")
Ref = Annotated[str, typer.Argument(help="The request's reference (or internal id).")]


@dsr_app.command("open")
def open_command(
    kind: Annotated[str, typer.Option(help="access, portability, rectification, ...")],
    received: Annotated[str | None, typer.Option(help="Date received (default: now).")] = None,
    reference: Annotated[str | None, typer.Option(help="Your reference (default: made).")] = None,
    note: Annotated[str, typer.Option(help="A note, sealed under the request's key.")] = "",
) -> None:
    """Record a request received on a date; it is due one month later."""
    vault = cli_vault()
    with refusals_exit():
        when = parse_date(received) if received else vault.clock.now()
        request = dsr.open_request(
            vault, kind=kind, received_at=when, actor=cli_actor(), reference=reference, note=note
        )
    typer.echo(f"request {request.reference} ({request.id}) due {request.due_at:%Y-%m-%d}")


@dsr_app.command("list")
def list_command(
    include_closed: Annotated[bool, typer.Option("--all", help="Closed ones too.")] = False,
) -> None:
    """Requests by deadline: overdue ones are marked OVERDUE."""
    for r in list_requests(cli_vault(), include_closed=include_closed):
        flag = "OVERDUE" if r.overdue else f"{r.days_left} days left"
        verified = "verified" if r.verified else "identity not verified"
        typer.echo(
            f"{r.reference}  {r.kind}  {r.state}  due={r.due_at:%Y-%m-%d}  {flag}"
            f"  studies={r.studies}  {verified}"
        )


@dsr_app.command("show")
def show_command(ref: Ref) -> None:
    """A request's state, studies and chronology (with its notes)."""
    vault = cli_vault()
    with refusals_exit():
        request = dsr.get_request(vault, ref)
        studies, events = studies_of(vault, request), events_of(vault, request)
    typer.echo(
        f"{request.reference}  {request.kind}  {request.state}  due={request.due_at:%Y-%m-%d}"
    )
    for s in studies:
        status = s.erased or ("restricted" if s.restricted else "stored")
        typer.echo(f"  study {s.study_id}  case={s.case_reference or '-'}  {status}")
    for e in events:
        ground = f" ({e.ground})" if e.ground else ""
        note = f"  note: {e.note}" if e.note else ""
        typer.echo(f"  {e.at:%Y-%m-%d %H:%M}  {e.actor}  {e.action}  {e.outcome}{ground}{note}")


@dsr_app.command("search")
def search_command(
    ref: Ref,
    patient_id: Annotated[str, typer.Option(help="The patient ID the person gave.")],
    issuer: Annotated[list[str] | None, typer.Option(help="Issuer(s) of that ID.")] = None,
    organisation: Annotated[
        str | None,
        typer.Option(help="Only this organisation's id (its registered issuers searched too)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Check the header's name too.")] = None,
    birth_date: Annotated[str | None, typer.Option(help="Check the birth date too.")] = None,
) -> None:
    """Match the person's studies to the request by their identifiers (never stored)."""
    given = SubjectIdentifiers(patient_id, tuple(issuer or ()), organisation, name, birth_date)
    with refusals_exit():
        found = find_subject_studies(cli_vault(), ref, given, actor=cli_actor())
    typer.echo(f"matched {len(found.matched)} studies, left out {found.excluded} by header check")
    if not found.matched:
        typer.echo(
            "no study matched: check the ID and its issuer exactly as the hospital writes them"
            " (the issuer is part of the identity); the request is not answered by this alone",
            err=True,
        )


@dsr_app.command("verify")
def verify_command(
    ref: Ref,
    method: Annotated[str, typer.Option(help=", ".join(dsr.VERIFICATION_METHODS))],
    note: Annotated[str, typer.Option(help="How it was checked (sealed).")] = "",
) -> None:
    """Record that the requester's identity was verified."""
    with refusals_exit():
        dsr.verify_identity(cli_vault(), ref, actor=cli_actor(), method=method, note=note)
    typer.echo(f"identity verified ({method})")


@dsr_app.command("extend")
def extend_command(
    ref: Ref,
    months: Annotated[int, typer.Option(help="1 or 2.")],
    reason: Annotated[str, typer.Option(help=", ".join(dsr.EXTENSION_REASONS))],
    note: Annotated[str, typer.Option(help="A note (sealed).")] = "",
) -> None:
    """Extend the deadline (within the first month, two months at most)."""
    with refusals_exit():
        request = dsr.extend_deadline(
            cli_vault(), ref, actor=cli_actor(), months=months, reason=reason, note=note
        )
    typer.echo(f"now due {request.due_at:%Y-%m-%d}")


@dsr_app.command("export")
def export_command(
    ref: Ref, out: Annotated[Path, typer.Option(help="The ZIP file to write.")]
) -> None:
    """Write the access or portability package: DICOM originals and manifest.json."""
    with refusals_exit(VaultError, CryptoError):
        package = write_package(cli_vault(), ref, out, actor=cli_actor())
    typer.echo(f"{len(package.files)} files of {len(package.study_ids)} studies written to {out}")


@dsr_app.command("rectify")
def rectify_command(
    ref: Ref,
    set_: Annotated[
        list[str], typer.Option("--set", help=f"KEYWORD=value; keywords: {', '.join(RECTIFIABLE)}")
    ],
) -> None:
    """Correct patient attributes in the person's studies (pseudonymised copies remade)."""
    changes = dict(item.partition("=")[::2] for item in set_)
    with refusals_exit(VaultError, CryptoError):
        done = rectify(cli_vault(), ref, changes, actor=cli_actor())
    typer.echo(f"rectified {len(done)} studies ({', '.join(sorted(changes))})")


@dsr_app.command("restrict")
def restrict_command(ref: Ref) -> None:
    """Restrict processing: engineers lose the person's studies, nothing is deleted."""
    with refusals_exit():
        placed = restrict(cli_vault(), ref, actor=cli_actor())
    typer.echo(f"restricted {len(placed)} studies")


@dsr_app.command("lift")
def lift_command(ref: Ref) -> None:
    """Lift the request's restrictions: engineers' access comes back."""
    with refusals_exit():
        lifted = lift_restriction(cli_vault(), ref, actor=cli_actor())
    typer.echo(f"lifted the restriction on {len(lifted)} studies")


@dsr_app.command("erase")
def erase_command(
    ref: Ref,
    legal_obligation: Annotated[
        str | None, typer.Option(help="Code of a legal obligation to keep the data, if any.")
    ] = None,
) -> None:
    """Crypto-shred the person's studies, unless a legal hold or obligation applies."""
    with refusals_exit():
        outcome = erase(cli_vault(), ref, actor=cli_actor(), legal_obligation=legal_obligation)
    typer.echo(f"erased {len(outcome.erased)} studies")
    for study_id, ground in outcome.refused.items():
        typer.echo(f"refused {study_id}: {ground}")


@dsr_app.command("close")
def close_command(
    ref: Ref,
    outcome: Annotated[str, typer.Option(help="completed, refused or withdrawn.")],
    note: Annotated[str, typer.Option(help="The closing note (sealed).")],
) -> None:
    """Close the request with its outcome and a note."""
    with refusals_exit():
        request = dsr.close_request(cli_vault(), ref, actor=cli_actor(), outcome=outcome, note=note)
    typer.echo(f"request {request.reference} {request.state}")
