"""The ``dicom-vault breach`` commands: the breach register from the command line.

Each command opens the vault, does one step through :mod:`vault.breaches`
(recorded in the access log as actor ``cli:<account>``) and prints references, codes,
dates and flags. Times are ISO dates or date-times, in UTC when no offset is
given. A refused step prints its reason and exits with status 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vault import breaches
from vault.breach_views import BreachView, get_breach, list_breaches, texts_of
from vault.catalog.breaches import DATA_CATEGORIES, ENTRY_KINDS, NATURES
from vault.command_support import cli_actor, cli_vault, parse_date, refusals_exit

breach_app = typer.Typer(help="The breach register: incidents, deadlines, notifications.")
Ref = Annotated[str, typer.Argument(help="The incident's reference (or internal id).")]


def _flags(view: BreachView) -> str:
    flags = [
        name
        for name, on in (
            ("INVESTIGATION-OVERDUE", view.investigation_overdue),
            ("INVESTIGATION-LATE", view.investigation_late),
            ("NOTIFICATION-OVERDUE", view.notification_overdue),
            ("NOTIFIED-LATE", view.notified_late),
        )
        if on
    ]
    return " ".join(flags) or "on time"


@breach_app.command("record")
def record_command(
    nature: Annotated[list[str], typer.Option(help=", ".join(NATURES))],
    description: Annotated[str, typer.Option(help="What happened (sealed).")],
    detected: Annotated[str | None, typer.Option(help="When detected (default: now).")] = None,
    category: Annotated[list[str] | None, typer.Option(help=", ".join(DATA_CATEGORIES))] = None,
    subjects: Annotated[int | None, typer.Option(help="Data subjects (approx.).")] = None,
    records: Annotated[int | None, typer.Option(help="Records (approx.).")] = None,
    reference: Annotated[str | None, typer.Option(help="Your reference.")] = None,
) -> None:
    """Record an incident; the 24 h and 72 h deadlines run from its detection."""
    vault = cli_vault()
    with refusals_exit():
        breach = breaches.record_breach(
            vault,
            detected_at=parse_date(detected) if detected else vault.clock.now(),
            nature=nature,
            description=description,
            actor=cli_actor(),
            categories=category or (),
            subjects=subjects,
            records=records,
            reference=reference,
        )
    view = get_breach(vault, breach.id)
    typer.echo(f"incident {breach.reference} ({breach.id}), notify by {view.notification_due:%c}")


@breach_app.command("list")
def list_command(
    include_closed: Annotated[bool, typer.Option("--all", help="Closed ones too.")] = False,
) -> None:
    """Incidents, newest first, with their deadline flags."""
    for view in list_breaches(cli_vault(), include_closed=include_closed):
        b = view.breach
        typer.echo(
            f"{b.reference}  {b.state}  detected={b.detected_at:%Y-%m-%d %H:%M}"
            f"  nature={b.nature}  {_flags(view)}"
        )


@breach_app.command("show")
def show_command(ref: Ref) -> None:
    """An incident: facts, deadlines, texts and chronology."""
    vault = cli_vault()
    with refusals_exit():
        view = get_breach(vault, ref)
        texts, entries = texts_of(vault, view.breach)
    b = view.breach
    typer.echo(f"{b.reference}  {b.state}  nature={b.nature}  categories={b.data_categories}")
    typer.echo(f"subjects={b.subjects_affected}  records={b.records_affected}  {_flags(view)}")
    for field, text in texts.items():
        typer.echo(f"{field}: {text}")
    for entry in entries:
        typer.echo(f"  {entry.at:%Y-%m-%d %H:%M}  {entry.kind}  {entry.actor}  {entry.text}")


@breach_app.command("entry")
def entry_command(
    ref: Ref,
    kind: Annotated[str, typer.Option(help=", ".join(ENTRY_KINDS))],
    text: Annotated[str, typer.Option(help="What happened (sealed).")],
    at: Annotated[str | None, typer.Option(help="When (default: now).")] = None,
) -> None:
    """Add to the chronology (the first 'investigation' entry starts the investigation)."""
    with refusals_exit():
        breaches.add_entry(
            cli_vault(),
            ref,
            actor=cli_actor(),
            kind=kind,
            text=text,
            at=parse_date(at) if at else None,
        )
    typer.echo("entry added")


@breach_app.command("assess")
def assess_command(
    ref: Ref,
    category: Annotated[list[str] | None, typer.Option(help=", ".join(DATA_CATEGORIES))] = None,
    subjects: Annotated[int | None, typer.Option(help="Data subjects (approx.).")] = None,
    records: Annotated[int | None, typer.Option(help="Records (approx.).")] = None,
    cause: Annotated[str | None, typer.Option(help="The cause of the breach.")] = None,
    consequences: Annotated[str | None, typer.Option(help="Likely consequences.")] = None,
    measures: Annotated[str | None, typer.Option(help="Measures taken or proposed.")] = None,
    lessons: Annotated[str | None, typer.Option(help="Lessons learned.")] = None,
) -> None:
    """Update the assessment (what is not given stays as it is)."""
    given = {
        "cause": cause,
        "consequences": consequences,
        "measures": measures,
        "lessons": lessons,
    }
    with refusals_exit():
        breaches.update_assessment(
            cli_vault(),
            ref,
            actor=cli_actor(),
            categories=category,
            subjects=subjects,
            records=records,
            texts={field: text for field, text in given.items() if text is not None},
        )
    typer.echo("assessment updated")


@breach_app.command("notify")
def notify_command(
    ref: Ref,
    party: Annotated[str, typer.Option(help="authority or subjects.")],
    at: Annotated[str | None, typer.Option(help="When they were notified.")] = None,
    exemption: Annotated[str | None, typer.Option(help="Why they were not.")] = None,
    reason: Annotated[str, typer.Option(help="The reason for the exemption (sealed).")] = "",
    authority_reference: Annotated[str | None, typer.Option(help="The authority's ref.")] = None,
) -> None:
    """Record a notification (to the authority or the data subjects), or why there was none."""
    with refusals_exit():
        breaches.record_notification(
            cli_vault(),
            ref,
            actor=cli_actor(),
            party=party,
            at=parse_date(at) if at else None,
            exemption=exemption,
            reason=reason,
            authority_reference=authority_reference,
        )
    typer.echo(f"{party} decision recorded")


@breach_app.command("close")
def close_command(ref: Ref) -> None:
    """Close the incident: its cause, consequences, measures, lessons and both notification
    decisions (with the reason for any exemption) must be on record."""
    with refusals_exit():
        breaches.close_breach(cli_vault(), ref, actor=cli_actor())
    typer.echo("incident closed")
