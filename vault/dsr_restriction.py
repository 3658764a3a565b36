"""Restriction of processing (GDPR article 18): engineers lose a person's studies.

:func:`restrict` places a :class:`~vault.catalog.dsr.DsrRestriction` on every
study matched to a request; nothing is deleted or re-encrypted. While one is
active, engineers cannot read the pseudonymised copies of the case holding
the study: the one authorisation rule (:func:`vault.auth.permissions.can_access_case`
and its listings, for ``read-pseudonymised``) leaves such a case out, so the
engineers' listings, downloads, DICOMweb and thumbnails answer as if it did
not exist (404). A case holds one patient under the default policy; where a
case allows several, all of it is withheld while the restriction lasts, so
that nothing of the person is ever served. :func:`lift_restriction` ends the
request's restrictions and access comes back as it was. Both steps are
recorded per study on the request and in the access log.

A restriction also covers the person's studies that arrive while it is
active: the ingest pipeline's catalog write calls :func:`restrict_on_arrival`
when it creates a study, in the same transaction, and a study carrying one of
the request's subject digests (:func:`vault.catalog.dsr.carries_subject`, the
search's own rule) is restricted under that request at once, before anyone
can reach it. :func:`restrict` likewise takes the studies that arrived
between the search and the restriction. Such studies are listed under the
request (:func:`restricted_study_ids`) and released with the others.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, func, select
from sqlalchemy.orm import Session

from vault.catalog.dsr import DataSubjectRequest, DsrEvent, DsrRestriction, carries_subject
from vault.catalog.models import Study
from vault.core import Vault
from vault.dsr import load, matched_study_ids, record_step, require_open, require_verified
from vault.errors import InvalidInput

ARRIVAL_ACTOR = "system:dsr-restriction"


def _active() -> ColumnElement[bool]:
    return DsrRestriction.lifted_at.is_(None)


def is_restricted(session: Session, study_id: str) -> bool:
    """Whether an active restriction covers original study ``study_id``."""
    query = select(DsrRestriction.id).where(DsrRestriction.study_id == study_id, _active())
    return session.scalar(query.limit(1)) is not None


def restrict(vault: Vault, ref: str, *, actor: str, remote: str | None = None) -> list[str]:
    """Restrict every study matched to request ``ref``; the ids newly restricted.

    Raises:
        NotFound: no such request.
        RequestNotOpen: closed, or its kind does not call for a restriction.
        IdentityNotVerified: the requester was not verified yet.
        InvalidInput: no study was matched to the request.
    """
    with vault.catalog.session() as session:
        request = load(session, ref)
        require_open(request, "restrict")
        require_verified(request)
        study_ids = _existing(session, matched_study_ids(session, request.id))
        if not study_ids:
            raise InvalidInput("no study is matched to this request", reason="no-studies")
        study_ids += [s for s in _arrived_since_search(session, request) if s not in study_ids]
        placed = [s for s in study_ids if not is_restricted(session, s)]
        for study_id in placed:
            _place(vault, session, request, study_id, actor, remote)
    return placed


def _place(
    vault: Vault,
    session: Session,
    request: DataSubjectRequest,
    study_id: str,
    actor: str,
    remote: str | None = None,
    **detail: str,
) -> None:
    """Restrict ``study_id`` under ``request`` and record it on the request and in the log."""
    now = vault.clock.now()
    session.add(
        DsrRestriction(request_id=request.id, study_id=study_id, placed_at=now, placed_by=actor)
    )
    record_step(
        vault, session, request, actor, "restrict", study_id=study_id, detail=detail, remote=remote
    )


def _digests(request: DataSubjectRequest) -> list[str]:
    return list(json.loads(request.subject_digests))


def _arrived_since_search(session: Session, request: DataSubjectRequest) -> list[str]:
    """The person's studies catalogued after the request's last search."""
    searched = session.scalar(
        select(func.max(DsrEvent.at)).where(
            DsrEvent.request_id == request.id, DsrEvent.action == "search"
        )
    )
    return _subject_studies(session, request, after=searched) if searched else []


def _subject_studies(
    session: Session,
    request: DataSubjectRequest,
    *,
    after: datetime | None = None,
    study_id: str | None = None,
) -> list[str]:
    """The request's subject's studies (by the search's rule), optionally narrowed."""
    query = select(Study.id).where(carries_subject(_digests(request)))
    if after is not None:
        query = query.where(Study.received_at > after)
    if study_id is not None:
        query = query.where(Study.id == study_id)
    return list(session.scalars(query.order_by(Study.received_at, Study.id)))


def _restricting_requests(session: Session) -> list[DataSubjectRequest]:
    """The requests with at least one active restriction."""
    active = select(DsrRestriction.request_id).where(_active())
    query = select(DataSubjectRequest).where(DataSubjectRequest.id.in_(active))
    return list(session.scalars(query.order_by(DataSubjectRequest.received_at)))


def restrict_on_arrival(vault: Vault, connection: Connection, study_id: str) -> int:
    """Restrict new study ``study_id`` under every active restriction of its subject.

    Called by the ingest pipeline's catalog write when it creates a study, on
    its connection: the restriction commits (or rolls back) with the study.
    Each is recorded on the request and in the access log as actor
    :data:`ARRIVAL_ACTOR`. Returns how many restrictions were placed.
    """
    with Session(bind=connection, join_transaction_mode="rollback_only") as session:
        placed = 0
        for request in _restricting_requests(session):
            ours = _subject_studies(session, request, study_id=study_id)
            if ours and not _placed_on(session, request.id, study_id):
                _place(vault, session, request, study_id, ARRIVAL_ACTOR, on="arrival")
                placed += 1
        session.flush()
    return placed


def _placed_on(session: Session, request_id: str, study_id: str) -> bool:
    query = select(DsrRestriction.id).where(
        DsrRestriction.request_id == request_id, DsrRestriction.study_id == study_id, _active()
    )
    return session.scalar(query.limit(1)) is not None


def lift_restriction(vault: Vault, ref: str, *, actor: str, remote: str | None = None) -> list[str]:
    """Lift the active restrictions request ``ref`` placed; the study ids lifted.

    A restriction outlives the closing of its request (it is the outcome of a
    restriction request), so it can be lifted after the request was closed.

    Raises:
        NotFound: no such request.
    """
    with vault.catalog.session() as session:
        request = load(session, ref)
        rows = list(
            session.scalars(
                select(DsrRestriction).where(DsrRestriction.request_id == request.id, _active())
            )
        )
        now = vault.clock.now()
        for row in rows:
            row.lifted_at, row.lifted_by = now, actor
            step, study_id = "lift-restriction", row.study_id
            record_step(vault, session, request, actor, step, study_id=study_id, remote=remote)
    return [row.study_id for row in rows]


def restricted_study_ids(session: Session, request_id: str) -> list[str]:
    """Every study request ``request_id`` restricted (matched or arrived later), first first."""
    query = select(DsrRestriction.study_id).where(DsrRestriction.request_id == request_id)
    ordered = session.scalars(query.order_by(DsrRestriction.placed_at, DsrRestriction.id))
    return list(dict.fromkeys(ordered))


def restricted_ids(session: Session, study_ids: list[str]) -> set[str]:
    """Those of ``study_ids`` an active restriction covers."""
    query = select(DsrRestriction.study_id).where(DsrRestriction.study_id.in_(study_ids), _active())
    return set(session.scalars(query))


def _existing(session: Session, study_ids: list[str]) -> list[str]:
    """Those of ``study_ids`` still in the catalog (not erased), in the same order."""
    present = set(session.scalars(select(Study.id).where(Study.id.in_(study_ids))))
    return [study_id for study_id in study_ids if study_id in present]
