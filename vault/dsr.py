"""Data-subject requests: received, verified, extended, closed; every step on record.

A request (GDPR articles 15 to 21) is opened with its kind and the date it was
received; it is due one calendar month later (article 12(3)). Within that
first month the DPO may extend it by up to two further months, giving a
reason code. Nothing is handed over and no data is changed until the
requester's identity was verified (who checked, how, when). The request ends
``completed``, ``refused`` or ``withdrawn`` with a closing note.

Each step adds a :class:`~vault.catalog.dsr.DsrEvent` to the request's
chronology and an access-log record (``dsr.<step>``, object ``dsr``): internal
ids, codes and counts only. Notes are sealed under the request's own data key
(:mod:`vault.dsr_sealing`). The actions on data live beside this module:
:mod:`vault.dsr_search`, :mod:`vault.dsr_package`, :mod:`vault.dsr_rectify`,
:mod:`vault.dsr_restriction`, :mod:`vault.dsr_erasure`; what the pages and
the command line show is in :mod:`vault.dsr_views`.
"""

from __future__ import annotations

import calendar
import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from vault.audit import AuditRecord, DetailValue
from vault.catalog.dsr import (
    CLOSED_STATES,
    OPEN_STATES,
    REQUEST_KINDS,
    DataSubjectRequest,
    DsrEvent,
    DsrStudy,
)
from vault.core import Vault
from vault.dsr_sealing import checked_text, seal_text
from vault.errors import IdentityNotVerified, InvalidInput, NotFound, RequestNotOpen

VERIFICATION_METHODS = (
    "identity-document",
    "hospital-confirmation",
    "in-person",
    "electronic-id",
    "signed-letter",
)
EXTENSION_REASONS = ("complexity", "number-of-requests")
MAX_EXTENSION_MONTHS = 2
# What may be done on the data for each kind of request (article 18(1) lets a
# contested or objected-to study be restricted while the request is decided).
ACTIONS_BY_KIND: dict[str, frozenset[str]] = {
    "access": frozenset({"export"}),
    "portability": frozenset({"export"}),
    "rectification": frozenset({"rectify", "restrict"}),
    "restriction": frozenset({"restrict"}),
    "erasure": frozenset({"erase", "restrict"}),
    "objection": frozenset({"restrict"}),
}
REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus ``months`` calendar months (the day clamped to the month's end)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"{what} must be one of: {', '.join(allowed)}", reason=f"invalid-{what}")
    return value


def _reference(vault: Vault, reference: str | None) -> str:
    if reference is None or not reference.strip():
        return f"DSR-{vault.clock.now():%Y}-{secrets.token_hex(3).upper()}"
    if not REFERENCE.fullmatch(reference.strip()):
        raise InvalidInput(
            "a request reference is 1 to 40 letters, digits, dots, dashes or underscores",
            reason="invalid-reference",
        )
    return reference.strip()


def open_request(
    vault: Vault,
    *,
    kind: str,
    received_at: datetime,
    actor: str,
    remote: str | None = None,
    reference: str | None = None,
    note: str = "",
) -> DataSubjectRequest:
    """Record a request received at ``received_at``; due one month later.

    Raises:
        InvalidInput: unknown kind, a receipt date in the future, a malformed
            or already used reference, or an over-long note.
    """
    _choice(kind, REQUEST_KINDS, "kind")
    if received_at > vault.clock.now():
        raise InvalidInput("the date of receipt is in the future", reason="received-in-future")
    reference, note = _reference(vault, reference), checked_text(note)
    pending = vault.keyring.generate()
    with vault.catalog.session() as session:
        if session.scalar(select(DataSubjectRequest.id).where(_named(reference))) is not None:
            raise InvalidInput("this request reference is already used", reason="duplicate")
        vault.keyring.persist(session, pending)
        session.flush()
        request = DataSubjectRequest(
            reference=reference,
            kind=kind,
            received_at=received_at,
            due_at=add_months(received_at, 1),
            key_id=pending.key.key_id,
            created_by=actor,
            created_at=vault.clock.now(),
        )
        session.add(request)
        session.flush()
        detail = {"kind": kind}
        record_step(vault, session, request, actor, "open", note=note, detail=detail, remote=remote)
    return request


def _named(ref: str) -> ColumnElement[bool]:
    return or_(DataSubjectRequest.id == ref, DataSubjectRequest.reference == ref)


def load(session: Session, ref: str) -> DataSubjectRequest:
    """The request whose internal id or reference is ``ref``.

    Raises:
        NotFound: no such request.
    """
    request = session.scalar(select(DataSubjectRequest).where(_named(ref)))
    if request is None:
        raise NotFound("no such data-subject request")
    return request


def get_request(vault: Vault, ref: str) -> DataSubjectRequest:
    with vault.catalog.read_session() as session:
        return load(session, ref)


def require_open(request: DataSubjectRequest, action: str | None = None) -> None:
    """Refuse a closed request, or an ``action`` its kind does not call for."""
    if request.state not in OPEN_STATES:
        raise RequestNotOpen(f"the request is {request.state}")
    if action is not None and action not in ACTIONS_BY_KIND[request.kind]:
        raise RequestNotOpen(f"a {request.kind} request does not call for '{action}'")


def require_verified(request: DataSubjectRequest) -> None:
    """Refuse to hand over or change data before the requester's identity was checked."""
    if request.verified_at is None:
        raise IdentityNotVerified("the requester's identity has not been verified yet")


def record_step(
    vault: Vault,
    session: Session,
    request: DataSubjectRequest,
    actor: str,
    action: str,
    *,
    outcome: str = "success",
    study_id: str | None = None,
    ground: str | None = None,
    detail: Mapping[str, DetailValue] | None = None,
    note: str = "",
    remote: str | None = None,
) -> None:
    """Add a step to the request's chronology and the access log (inside ``session``).

    ``remote`` is the caller's address, recorded with the access-log record.
    """
    detail = dict(detail or {})
    event = DsrEvent(
        request_id=request.id,
        at=vault.clock.now(),
        actor=actor,
        action=action,
        outcome=outcome,
        study_id=study_id,
        ground=ground,
        detail=json.dumps(detail, sort_keys=True),
    )
    session.add(event)
    session.flush()
    if note:
        key = vault.keyring.data_key(request.key_id, session=session)
        event.note_sealed = seal_text(key, note, note_context(request.id, event.seq))
    if ground:
        detail["ground"] = ground
    record = AuditRecord(
        actor,
        f"dsr.{action}",
        outcome=outcome,
        object_type="study" if study_id else "dsr",
        object_id=study_id or request.id,
        remote=remote,
        detail={**detail, "dsr": request.id} if study_id else detail,
    )
    vault.audit.record(record, session=session)


def note_context(request_id: str, seq: int) -> str:
    return f"dsr:{request_id}:event:{seq}"


def verify_identity(
    vault: Vault, ref: str, *, actor: str, method: str, note: str = "", remote: str | None = None
) -> DataSubjectRequest:
    """Record that ``actor`` verified the requester's identity by ``method``.

    Raises:
        InvalidInput: unknown method, or already verified.
        RequestNotOpen: the request is closed.
    """
    _choice(method, VERIFICATION_METHODS, "method")
    note = checked_text(note)
    with vault.catalog.session() as session:
        request = load(session, ref)
        require_open(request)
        if request.verified_at is not None:
            raise InvalidInput("the identity was verified already", reason="verified")
        request.verified_at, request.verified_by = vault.clock.now(), actor
        request.verification_method, request.state = method, "verified"
        detail = {"method": method}
        record_step(
            vault, session, request, actor, "verify", note=note, detail=detail, remote=remote
        )
    return request


def extend_deadline(
    vault: Vault,
    ref: str,
    *,
    actor: str,
    months: int,
    reason: str,
    note: str = "",
    remote: str | None = None,
) -> DataSubjectRequest:
    """Extend the deadline by ``months`` (at most two in all, decided within the first month).

    Raises:
        InvalidInput: unknown reason, too long, or decided after the first month.
        RequestNotOpen: the request is closed.
    """
    _choice(reason, EXTENSION_REASONS, "reason")
    note = checked_text(note)
    with vault.catalog.session() as session:
        request = load(session, ref)
        require_open(request)
        total = request.extended_months + months
        if months < 1 or total > MAX_EXTENSION_MONTHS:
            raise InvalidInput("a deadline is extended by two months at most", reason="extension")
        if vault.clock.now() > add_months(request.received_at, 1):
            raise InvalidInput(
                "an extension must be decided within one month of receipt", reason="extension-late"
            )
        request.extended_months, request.extension_reason = total, reason
        request.due_at = add_months(request.received_at, 1 + total)
        detail = {"months": months, "reason": reason, "due": request.due_at.date().isoformat()}
        record_step(
            vault, session, request, actor, "extend", note=note, detail=detail, remote=remote
        )
    return request


def close_request(
    vault: Vault, ref: str, *, actor: str, outcome: str, note: str, remote: str | None = None
) -> DataSubjectRequest:
    """Close the request as ``completed``, ``refused`` or ``withdrawn`` with a note.

    Raises:
        InvalidInput: unknown outcome or no note.
        RequestNotOpen: closed already.
    """
    _choice(outcome, CLOSED_STATES, "outcome")
    note = checked_text(note, required=True)
    with vault.catalog.session() as session:
        request = load(session, ref)
        require_open(request)
        request.state, request.closed_at, request.closed_by = outcome, vault.clock.now(), actor
        late = request.closed_at > request.due_at
        detail = {"outcome": outcome, "late": late}
        record_step(
            vault, session, request, actor, "close", note=note, detail=detail, remote=remote
        )
    return request


def matched_study_ids(session: Session, request_id: str) -> list[str]:
    """The studies matched to the request, in the order they were matched."""
    query = select(DsrStudy.study_id).where(DsrStudy.request_id == request_id)
    return list(session.scalars(query.order_by(DsrStudy.matched_at, DsrStudy.study_id)))
