"""What the DPO's lists and pages show of the breach register: deadlines and chronology.

:func:`view_of` works out an incident's deadlines from its detection time
(investigation within 24 hours, authority notified within 72) and flags what
is overdue now or was done late, by when each step was typed in (the time
the DPO states for it is shown, but a backdated entry is not on time);
:func:`texts_of` opens its sealed descriptions and chronology for the DPO's
pages and the command line only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from vault.breaches import INVESTIGATION_WITHIN, NOTIFY_AUTHORITY_WITHIN, load
from vault.catalog.breaches import EXEMPTION_REASON_FIELDS, SEALED_FIELDS, Breach, BreachEntry
from vault.core import Vault
from vault.dsr_sealing import open_text


@dataclass(frozen=True)
class BreachView:
    """An incident with its deadlines worked out (no sealed text)."""

    breach: Breach
    investigation_due: datetime
    notification_due: datetime
    investigation_overdue: bool
    investigation_late: bool
    notification_overdue: bool
    notified_late: bool
    hours_left: int


@dataclass(frozen=True)
class EntryView:
    at: datetime
    kind: str
    actor: str
    text: str


def view_of(breach: Breach, now: datetime) -> BreachView:
    """``breach`` with its deadlines; lateness judged by the steps' recording times."""
    investigate_by = breach.detected_at + INVESTIGATION_WITHIN
    notify_by = breach.detected_at + NOTIFY_AUTHORITY_WITHIN
    started = breach.investigation_recorded_at or breach.investigation_started_at
    notified = breach.authority_notified_recorded_at or breach.authority_notified_at
    decided = notified is not None or breach.authority_exemption is not None
    is_open = breach.state == "open"
    return BreachView(
        breach=breach,
        investigation_due=investigate_by,
        notification_due=notify_by,
        investigation_overdue=is_open and started is None and now > investigate_by,
        investigation_late=started is not None and started > investigate_by,
        notification_overdue=is_open and not decided and now > notify_by,
        notified_late=notified is not None and notified > notify_by,
        hours_left=int((notify_by - now).total_seconds() // 3600),
    )


def list_breaches(vault: Vault, *, include_closed: bool = False) -> list[BreachView]:
    """Incidents, most recently detected first (open ones only unless asked)."""
    query = select(Breach).order_by(Breach.detected_at.desc())
    if not include_closed:
        query = query.where(Breach.state == "open")
    with vault.catalog.read_session() as session:
        return [view_of(b, vault.clock.now()) for b in session.scalars(query)]


def texts_of(vault: Vault, breach: Breach) -> tuple[dict[str, str], list[EntryView]]:
    """The incident's opened texts and chronology (for the DPO's eyes only)."""
    key = vault.keyring.data_key(breach.key_id)
    texts = {
        field: open_text(key, sealed, f"breach:{breach.id}:{field}")
        for field in (*SEALED_FIELDS, *EXEMPTION_REASON_FIELDS)
        if (sealed := getattr(breach, f"{field}_sealed"))
    }
    with vault.catalog.read_session() as session:
        rows = session.scalars(
            select(BreachEntry)
            .where(BreachEntry.breach_id == breach.id)
            .order_by(BreachEntry.at, BreachEntry.seq)
        )
        entries = [
            EntryView(
                r.at,
                r.kind,
                r.actor,
                open_text(key, r.text_sealed, f"breach:{breach.id}:entry:{r.seq}"),
            )
            for r in rows
        ]
    return texts, entries


def get_breach(vault: Vault, ref: str) -> BreachView:
    with vault.catalog.read_session() as session:
        return view_of(load(session, ref), vault.clock.now())
