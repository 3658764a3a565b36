"""The breach register (GDPR article 33(5)): incidents, their chronology and deadlines.

An incident is recorded with the time it was detected and its nature
(confidentiality, integrity, availability); the assessment follows as it is
known (categories and approximate numbers of data subjects and records,
consequences, measures, lessons), and every step goes into its chronology.
Two deadlines run from detection: the investigation starts within 24 hours
(the manufacturer's promise) and the supervisory authority is notified within
72 hours unless the breach is unlikely to result in a risk (article 33(1)).
The data subjects are told, or the exemption of article 34(3) that applies is
recorded; every exemption needs its reason. An incident is closed only once
its cause, consequences, measures and lessons are on record (article 33(5)).
Lateness is measured against when a step was typed in, not the time the DPO
gives for it, so that a backdated entry cannot hide a late investigation.

Descriptions are sealed under the incident's own data key
(:mod:`vault.dsr_sealing`); codes, counts and dates are in clear. Every change
is recorded in the access log (``breach.<step>``, object ``breach``). The
deadline flags and opened texts the pages show are in :mod:`vault.breach_views`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from vault.audit import AuditRecord, DetailValue
from vault.catalog.breaches import (
    DATA_CATEGORIES,
    ENTRY_KINDS,
    NATURES,
    REQUIRED_TO_CLOSE,
    SEALED_FIELDS,
    Breach,
    BreachEntry,
)
from vault.core import Vault
from vault.dsr_sealing import checked_text, seal_text
from vault.errors import InvalidInput, NotFound, RequestNotOpen

INVESTIGATION_WITHIN = timedelta(hours=24)
NOTIFY_AUTHORITY_WITHIN = timedelta(hours=72)
AUTHORITY_EXEMPTIONS = ("unlikely-risk",)
SUBJECT_EXEMPTIONS = (
    "no-high-risk",
    "data-unintelligible",
    "risk-no-longer-likely",
    "public-communication",
)
PARTIES = ("authority", "subjects")
_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_AUTHORITY_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/-]{0,63}")


def _codes(values: Sequence[str], allowed: tuple[str, ...], what: str) -> str:
    chosen = sorted({v.strip() for v in values if v.strip()})
    wrong = [v for v in chosen if v not in allowed]
    if wrong:
        raise InvalidInput(f"{what} must be among: {', '.join(allowed)}", reason=f"invalid-{what}")
    return ",".join(chosen)


def _count(value: int | None, what: str) -> int | None:
    if value is not None and value < 0:
        raise InvalidInput(f"the number of {what} cannot be negative", reason="invalid-count")
    return value


def _not_future(vault: Vault, moment: datetime, what: str) -> datetime:
    if moment > vault.clock.now():
        raise InvalidInput(f"the {what} time is in the future", reason="in-future")
    return moment


def _named(ref: str) -> ColumnElement[bool]:
    return or_(Breach.id == ref, Breach.reference == ref)


def load(session: Session, ref: str) -> Breach:
    """The incident whose id or reference is ``ref``.

    Raises:
        NotFound: no such incident.
    """
    breach = session.scalar(select(Breach).where(_named(ref)))
    if breach is None:
        raise NotFound("no such incident in the breach register")
    return breach


def _audit(
    vault: Vault,
    session: Session,
    breach: Breach,
    actor: str,
    step: str,
    remote: str | None,
    **detail: DetailValue,
) -> None:
    record = AuditRecord(
        actor,
        f"breach.{step}",
        object_type="breach",
        object_id=breach.id,
        remote=remote,
        detail=detail,
    )
    vault.audit.record(record, session=session)


def _seal(vault: Vault, session: Session, breach: Breach, field: str, text: str) -> None:
    key = vault.keyring.data_key(breach.key_id, session=session)
    sealed = seal_text(key, text, f"breach:{breach.id}:{field}") if text else None
    setattr(breach, f"{field}_sealed", sealed)


def record_breach(
    vault: Vault,
    *,
    detected_at: datetime,
    nature: Sequence[str],
    description: str,
    actor: str,
    remote: str | None = None,
    occurred_at: datetime | None = None,
    categories: Sequence[str] = (),
    subjects: int | None = None,
    records: int | None = None,
    reference: str | None = None,
) -> Breach:
    """Open an incident in the register.

    Raises:
        InvalidInput: no or unknown nature, unknown category, a time in the
            future, a negative count, no description, or a used reference.
    """
    natures = _codes(nature, NATURES, "nature")
    if not natures:
        raise InvalidInput("name the nature of the breach", reason="invalid-nature")
    description = checked_text(description, required=True)
    reference = (reference or "").strip() or f"BR-{vault.clock.now():%Y}-{secrets.token_hex(3)}"
    if not _REFERENCE.fullmatch(reference):
        raise InvalidInput("a reference is 1 to 40 letters, digits, '.', '_' or '-'")
    pending = vault.keyring.generate()
    with vault.catalog.session() as session:
        if session.scalar(select(Breach.id).where(_named(reference))) is not None:
            raise InvalidInput("this incident reference is already used", reason="duplicate")
        vault.keyring.persist(session, pending)
        session.flush()
        breach = Breach(
            reference=reference,
            detected_at=_not_future(vault, detected_at, "detection"),
            occurred_at=_not_future(vault, occurred_at, "occurrence") if occurred_at else None,
            recorded_at=vault.clock.now(),
            recorded_by=actor,
            nature=natures,
            data_categories=_codes(categories, DATA_CATEGORIES, "category"),
            subjects_affected=_count(subjects, "data subjects"),
            records_affected=_count(records, "records"),
            key_id=pending.key.key_id,
        )
        session.add(breach)
        session.flush()
        _seal(vault, session, breach, "description", description)
        _audit(vault, session, breach, actor, "record", remote, nature=natures)
    return breach


def update_assessment(
    vault: Vault,
    ref: str,
    *,
    actor: str,
    remote: str | None = None,
    categories: Sequence[str] | None = None,
    subjects: int | None = None,
    records: int | None = None,
    texts: dict[str, str] | None = None,
) -> Breach:
    """Update what is known; arguments left ``None`` (or texts not given) stay as they are.

    Raises:
        InvalidInput: unknown category or field, a negative count.
        RequestNotOpen: the incident is closed.
    """
    texts = {k: checked_text(v) for k, v in (texts or {}).items()}
    if any(k not in SEALED_FIELDS for k in texts):
        raise InvalidInput(f"texts are among: {', '.join(SEALED_FIELDS)}", reason="field")
    with vault.catalog.session() as session:
        breach = _open(session, ref)
        if categories is not None:
            breach.data_categories = _codes(categories, DATA_CATEGORIES, "category")
        if subjects is not None:
            breach.subjects_affected = _count(subjects, "data subjects")
        if records is not None:
            breach.records_affected = _count(records, "records")
        for field, text in texts.items():
            _seal(vault, session, breach, field, text)
        changed = ",".join(sorted(texts))
        _audit(vault, session, breach, actor, "update", remote, texts=changed)
    return breach


def _open(session: Session, ref: str) -> Breach:
    breach = load(session, ref)
    if breach.state != "open":
        raise RequestNotOpen("the incident is closed")
    return breach


def add_entry(
    vault: Vault,
    ref: str,
    *,
    actor: str,
    kind: str,
    text: str,
    at: datetime | None = None,
    remote: str | None = None,
) -> BreachEntry:
    """Add a line to the chronology; the first ``investigation`` line starts the investigation.

    Raises:
        InvalidInput: unknown kind, no text, or a time in the future.
        RequestNotOpen: the incident is closed.
    """
    if kind not in ENTRY_KINDS:
        raise InvalidInput(f"the kind is one of: {', '.join(ENTRY_KINDS)}", reason="invalid-kind")
    text = checked_text(text, required=True)
    with vault.catalog.session() as session:
        breach = _open(session, ref)
        return _entry(vault, session, breach, actor, remote, kind, text, at or vault.clock.now())


def _entry(
    vault: Vault,
    session: Session,
    breach: Breach,
    actor: str,
    remote: str | None,
    kind: str,
    text: str,
    at: datetime,
) -> BreachEntry:
    """Add a chronology line by ``actor`` (from ``remote``) and record it."""
    at = _not_future(vault, at, "entry")
    if kind == "investigation" and breach.investigation_started_at is None:
        breach.investigation_started_at = at
        breach.investigation_recorded_at = vault.clock.now()
    entry = BreachEntry(
        breach_id=breach.id,
        at=at,
        recorded_at=vault.clock.now(),
        actor=actor,
        kind=kind,
        text_sealed=b"",
    )
    session.add(entry)
    session.flush()
    key = vault.keyring.data_key(breach.key_id, session=session)
    entry.text_sealed = seal_text(key, text, f"breach:{breach.id}:entry:{entry.seq}")
    _audit(vault, session, breach, actor, "entry", remote, kind=kind)
    return entry


def _check_notification(
    party: str, at: datetime | None, exemption: str | None, authority_reference: str | None
) -> None:
    """Refuse an unknown party or exemption, both or neither of a time and an exemption.

    Raises:
        InvalidInput: see :func:`record_notification`.
    """
    if party not in PARTIES:
        raise InvalidInput("the party is 'authority' or 'subjects'", reason="invalid-party")
    allowed = AUTHORITY_EXEMPTIONS if party == "authority" else SUBJECT_EXEMPTIONS
    if (at is None) == (exemption is None):
        raise InvalidInput("give either when they were notified or why not", reason="notify")
    if exemption is not None and exemption not in allowed:
        raise InvalidInput(f"the exemption is one of: {', '.join(allowed)}", reason="exemption")
    if authority_reference and not _AUTHORITY_REF.fullmatch(authority_reference):
        raise InvalidInput("the authority's reference is up to 64 plain characters")


def record_notification(
    vault: Vault,
    ref: str,
    *,
    actor: str,
    party: str,
    remote: str | None = None,
    at: datetime | None = None,
    authority_reference: str | None = None,
    exemption: str | None = None,
    reason: str = "",
) -> Breach:
    """Record that ``party`` was notified at ``at``, or the exemption why not and its ``reason``.

    Raises:
        InvalidInput: unknown party or exemption, both or neither given, an
            exemption without its reason, a malformed authority reference,
            or a time in the future.
        RequestNotOpen: the incident is closed.
    """
    _check_notification(party, at, exemption, authority_reference)
    reason = checked_text(reason)
    if exemption is not None and not reason:
        raise InvalidInput("give the reason for the exemption", reason="exemption-reason")
    with vault.catalog.session() as session:
        breach = _open(session, ref)
        if party == "authority":
            breach.authority_notified_at, breach.authority_exemption = at, exemption
            breach.authority_notified_recorded_at = vault.clock.now() if at else None
            breach.authority_reference = authority_reference or breach.authority_reference
        else:
            breach.subjects_notified_at, breach.subjects_exemption = at, exemption
        _seal(vault, session, breach, f"{party}_exemption_reason", reason if exemption else "")
        text = f"{party} notified" if at else f"{party} not notified: {exemption}"
        when = at or vault.clock.now()
        _entry(vault, session, breach, actor, remote, "notification", text, when)
        _audit(vault, session, breach, actor, "notify", remote, party=party, exemption=exemption)
    return breach


def missing_to_close(breach: Breach) -> list[str]:
    """What must still be recorded before ``breach`` can be closed (empty: nothing)."""
    missing = [field for field in REQUIRED_TO_CLOSE if not getattr(breach, f"{field}_sealed")]
    for party, label in (("authority", "the authority's"), ("subjects", "the data subjects'")):
        notified = getattr(breach, f"{party}_notified_at")
        exemption = getattr(breach, f"{party}_exemption")
        if notified is None and exemption is None:
            missing.append(f"{label} notification or exemption")
        elif exemption is not None and not getattr(breach, f"{party}_exemption_reason_sealed"):
            missing.append(f"the reason for {label} exemption")
    return missing


def close_breach(vault: Vault, ref: str, *, actor: str, remote: str | None = None) -> Breach:
    """Close the incident once its cause, consequences, measures, lessons and both
    notification decisions (with the reason for any exemption) are on record.

    Raises:
        InvalidInput: something required is missing (named in the message).
        RequestNotOpen: closed already.
    """
    with vault.catalog.session() as session:
        breach = _open(session, ref)
        missing = missing_to_close(breach)
        if missing:
            raise InvalidInput(
                f"before closing, record {', '.join(missing)}", reason="incomplete-record"
            )
        breach.state, breach.closed_at, breach.closed_by = "closed", vault.clock.now(), actor
        _audit(vault, session, breach, actor, "close", remote)
    return breach
