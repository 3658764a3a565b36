"""What the DPO's lists and pages show of data-subject requests: deadlines and chronology.

:func:`list_requests` gives each request with its deadline worked out
(``overdue`` when still open past its due date, ``days_left`` otherwise);
:func:`events_of` gives a request's chronology with its sealed notes opened,
for the DPO's pages and the command line only; :func:`studies_of` the
studies matched to it, stored or erased, and those its restriction took
when they arrived later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from vault.audit import DetailValue
from vault.catalog.dsr import OPEN_STATES, DataSubjectRequest, DsrEvent, DsrStudy
from vault.catalog.models import Case, Study
from vault.catalog.retention import Tombstone
from vault.core import Vault
from vault.dsr import matched_study_ids, note_context
from vault.dsr_restriction import restricted_ids, restricted_study_ids
from vault.dsr_sealing import open_text


@dataclass(frozen=True)
class RequestView:
    """A request as the DPO's lists show it: no PHI, deadlines worked out."""

    id: str
    reference: str
    kind: str
    state: str
    received_at: datetime
    due_at: datetime
    extended_months: int
    verified: bool
    studies: int
    overdue: bool
    days_left: int


@dataclass(frozen=True)
class EventView:
    seq: int
    at: datetime
    actor: str
    action: str
    outcome: str
    study_id: str | None
    ground: str | None
    detail: dict[str, DetailValue]
    note: str | None


def view_of(request: DataSubjectRequest, now: datetime, studies: int) -> RequestView:
    is_open = request.state in OPEN_STATES
    return RequestView(
        id=request.id,
        reference=request.reference,
        kind=request.kind,
        state=request.state,
        received_at=request.received_at,
        due_at=request.due_at,
        extended_months=request.extended_months,
        verified=request.verified_at is not None,
        studies=studies,
        overdue=is_open and now > request.due_at,
        days_left=(request.due_at - now).days,
    )


def list_requests(vault: Vault, *, include_closed: bool = False) -> list[RequestView]:
    """Requests by deadline, soonest first (open ones only unless asked)."""
    query = select(DataSubjectRequest).order_by(DataSubjectRequest.due_at)
    if not include_closed:
        query = query.where(DataSubjectRequest.state.in_(sorted(OPEN_STATES)))
    counts = select(DsrStudy.request_id, func.count()).group_by(DsrStudy.request_id)
    now = vault.clock.now()
    with vault.catalog.read_session() as session:
        studies = {request_id: n for request_id, n in session.execute(counts)}
        return [view_of(r, now, studies.get(r.id, 0)) for r in session.scalars(query)]


def events_of(vault: Vault, request: DataSubjectRequest) -> list[EventView]:
    """The request's chronology with its notes opened (for the DPO's eyes only)."""
    with vault.catalog.read_session() as session:
        rows = list(
            session.scalars(
                select(DsrEvent).where(DsrEvent.request_id == request.id).order_by(DsrEvent.seq)
            )
        )
    key = vault.keyring.data_key(request.key_id) if any(r.note_sealed for r in rows) else None
    return [
        EventView(
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            outcome=row.outcome,
            study_id=row.study_id,
            ground=row.ground,
            detail=json.loads(row.detail),
            note=open_text(key, row.note_sealed, note_context(request.id, row.seq))
            if key and row.note_sealed
            else None,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class MatchedStudy:
    """A study matched to a request, as its page shows it (internal ids, no PHI)."""

    study_id: str
    case_reference: str | None
    received_at: datetime | None
    instance_count: int
    restricted: bool
    erased: str | None  # the tombstone's reason once the study is gone


def studies_of(vault: Vault, request: DataSubjectRequest) -> list[MatchedStudy]:
    """The studies matched to ``request`` (stored or erased) in the order they were matched,
    then those its restriction took as they arrived."""
    with vault.catalog.read_session() as session:
        study_ids = matched_study_ids(session, request.id)
        study_ids += [s for s in restricted_study_ids(session, request.id) if s not in study_ids]
        restricted = restricted_ids(session, study_ids)
        found = []
        for study_id in study_ids:
            study = session.get(Study, study_id)
            if study is None:
                tomb = session.scalar(select(Tombstone).where(Tombstone.study_id == study_id))
                reason = tomb.reason if tomb else "gone"
                found.append(MatchedStudy(study_id, None, None, 0, False, reason))
                continue
            case = session.get(Case, study.case_id) if study.case_id else None
            found.append(
                MatchedStudy(
                    study_id,
                    case.reference if case else None,
                    study.received_at,
                    study.instance_count,
                    study_id in restricted,
                    None,
                )
            )
        return found
