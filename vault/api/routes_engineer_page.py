"""The engineer page: assigned cases, their pseudonymised studies, thumbnails, downloads.

``GET /engineer`` lists the cases within the engineer's reach
(:func:`cases_within_reach` with ``read-pseudonymised``), each with its
studies' de-identification states (counts per state; a study not yet queued
counts as pending) and, for every pseudonymised study, its pseudonym, counts,
series and download links (the study's ZIP and each series'). Only :class:`PseudonymisedStudy` and
:class:`PseudonymisedInstance` rows are shown, with the modality and slice
order their pseudonymised copies carry unchanged; no original UID, name or
description is ever read into the page.

``GET /engineer/studies/{id}/series/{uid}/thumbnail.png`` renders the middle
stored instance of one pseudonymised series (in slice order) through the one
decrypting reader, with the copy's own data key. A study out of reach answers
404 like an unknown one, an unfinished study 409 with its state, and
quarantined instances are never read. Every thumbnail read is recorded in the
access log with its outcome. Both routes are pages: session logins only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crypto.errors import CryptoError
from vault.api.pages import render
from vault.auth.guard import caller_record, require
from vault.auth.permissions import (
    CaseAction,
    Permission,
    Principal,
    can_access_case,
    cases_within_reach,
)
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Instance, Series, Study
from vault.core import Vault
from vault.errors import NotFound, NotReady, VaultError
from vault.objects import StoredObject, open_decrypted
from vault.thumbnails import ThumbnailUnavailable, render_thumbnail

router = APIRouter(include_in_schema=False)
EngineerPage = Annotated[Principal, Depends(require(Permission.PSEUDONYMISED_READ, page=True))]
StudyId = Annotated[str, Path(max_length=32)]
SeriesUid = Annotated[str, Path(max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")]
STATES = ("pending", "running", "done", "failed", "quarantined")
THUMBNAIL_CACHE = "private, max-age=300"


@dataclass(frozen=True)
class SeriesView:
    uid: str
    modality: str | None
    instance_count: int
    thumbnail_url: str
    archive_url: str


@dataclass
class StudyView:
    id: str
    pseudonym: str | None
    state: str
    reason: str | None
    instance_count: int
    quarantined_count: int
    series: list[SeriesView] = field(default_factory=list)

    @property
    def archive_url(self) -> str | None:
        """The study ZIP of the download API, only once the copy is finished."""
        return f"/api/engineer/studies/{self.id}/archive" if self.state == "done" else None


@dataclass
class CaseView:
    id: str
    reference: str
    studies: list[StudyView] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)


def _vault(request: Request) -> Vault:
    return request.app.state.vault


def _state_of(study: PseudonymisedStudy | None) -> str:
    """The page's state name: a study not yet queued, or queued, is pending."""
    if study is None or study.state == "queued":
        return "pending"
    return study.state


def _study_view(study: PseudonymisedStudy) -> StudyView:
    return StudyView(
        id=study.id,
        pseudonym=study.pseudonym,
        state=_state_of(study),
        reason=study.reason,
        instance_count=study.instance_count,
        quarantined_count=study.quarantined_count,
    )


def _series_views(session: Session, studies: dict[str, StudyView]) -> None:
    """Attach the stored series of the finished ``studies`` (counts, modality, thumbnail)."""
    row = PseudonymisedInstance
    done = [study_id for study_id, view in studies.items() if view.state == "done"]
    query = (
        select(row.pseudo_study_id, row.pseudo_series_uid, func.max(Series.modality), func.count())
        .join(Instance, Instance.id == row.source_instance_id)
        .join(Series, Series.id == Instance.series_id)
        .where(row.pseudo_study_id.in_(done), row.state == "done")
        .group_by(row.pseudo_study_id, row.pseudo_series_uid)
        .order_by(row.pseudo_study_id, row.pseudo_series_uid)
    )
    for study_id, series_uid, modality, count in session.execute(query):
        thumbnail = f"/engineer/studies/{study_id}/series/{series_uid}/thumbnail.png"
        archive = f"/api/engineer/studies/{study_id}/series/{series_uid}/archive"
        view = SeriesView(series_uid, modality, count, thumbnail, archive)
        studies[study_id].series.append(view)


def engineer_cases(session: Session, principal: Principal) -> list[CaseView]:
    """The cases within ``principal``'s pseudonymised reach, with their studies' states."""
    action = CaseAction.READ_PSEUDONYMISED
    cases = {
        case.id: CaseView(case.id, case.reference)
        for case in cases_within_reach(principal, action, session=session)
    }
    query = (
        select(Study.case_id, PseudonymisedStudy)
        .outerjoin(PseudonymisedStudy, PseudonymisedStudy.study_id == Study.id)
        .where(Study.case_id.in_(list(cases)))
        .order_by(Study.received_at, Study.id)
    )
    studies: dict[str, StudyView] = {}
    for case_id, study in session.execute(query):
        case = cases[case_id]
        case.states[_state_of(study)] += 1
        if study is not None:
            studies[study.id] = _study_view(study)
            case.studies.append(studies[study.id])
    _series_views(session, studies)
    return list(cases.values())


@router.get("/engineer", response_class=HTMLResponse)
def engineer_page(request: Request, principal: EngineerPage) -> Response:
    vault = _vault(request)
    with vault.catalog.read_session() as session:
        cases = engineer_cases(session, principal)
    listed = sum(len(case.studies) for case in cases)
    record = caller_record(
        request,
        principal,
        "study.list",
        object_type="query",
        detail={"results": listed},
    )
    vault.audit.record(record)
    return render(request, "engineer.html", cases=cases, states=STATES)


def _reachable_done_study(
    session: Session, principal: Principal, pseudo_study_id: str
) -> PseudonymisedStudy:
    """The finished study if its case is within reach (else NotFound; unfinished: NotReady)."""
    study = session.get(PseudonymisedStudy, pseudo_study_id)
    original = session.get(Study, study.study_id) if study is not None else None
    case_id = original.case_id if original is not None else None
    action = CaseAction.READ_PSEUDONYMISED
    if (
        study is None
        or case_id is None
        or not can_access_case(principal, case_id, action, session=session)
    ):
        raise NotFound("no such study")
    if study.state != "done":
        raise NotReady(f"the pseudonymised study is not ready (state: {_state_of(study)})")
    return study


def middle_instance(
    session: Session, pseudo_study_id: str, series_uid: str
) -> tuple[str, StoredObject]:
    """The id and object of the series' middle stored instance, in slice order.

    Raises:
        NotFound: the series has no stored instance (quarantined ones are never chosen).
    """
    row = PseudonymisedInstance
    query = (
        select(row, Instance.slice_position, Instance.instance_number)
        .join(Instance, Instance.id == row.source_instance_id)
        .where(
            row.pseudo_study_id == pseudo_study_id,
            row.pseudo_series_uid == series_uid,
            row.state == "done",
            row.object_key.is_not(None),
        )
    )
    found = session.execute(query).all()
    if not found:
        raise NotFound("no such series")
    found.sort(key=lambda r: (r[1] is None, r[1] or 0.0, r[2] or 0, r[0].pseudo_sop_uid or ""))
    chosen: PseudonymisedInstance = found[len(found) // 2][0]
    stored = StoredObject(
        chosen.object_key or "", chosen.key_id or "", chosen.sha256 or "", chosen.size or 0
    )
    return chosen.id, stored


def _render(vault: Vault, stored: StoredObject) -> bytes:
    key = vault.keyring.data_key(stored.key_id)
    with open_decrypted(vault.store, key, stored) as plaintext:
        try:
            return render_thumbnail(plaintext)
        except ThumbnailUnavailable as exc:
            raise NotFound("this series has no preview", reason="no-preview") from exc


def _record(
    request: Request, principal: Principal, study_id: str, outcome: str, instance: str
) -> None:
    """``thumbnail.read`` in the access log: who, which study and instance, from where, outcome."""
    record = caller_record(
        request,
        principal,
        "thumbnail.read",
        outcome=outcome,
        object_type="pseudonymised-study",
        object_id=study_id,
        detail={"instance": instance or None},
    )
    _vault(request).audit.record(record)


@router.get(
    "/engineer/studies/{pseudo_study_id}/series/{series_uid}/thumbnail.png",
    response_class=Response,
)
def series_thumbnail(
    request: Request, principal: EngineerPage, pseudo_study_id: StudyId, series_uid: SeriesUid
) -> Response:
    vault, instance = _vault(request), ""
    try:
        with vault.catalog.read_session() as session:
            study = _reachable_done_study(session, principal, pseudo_study_id)
            instance, stored = middle_instance(session, study.id, series_uid)
        png = _render(vault, stored)
    except (VaultError, CryptoError) as exc:
        _record(request, principal, pseudo_study_id, f"failure:{exc.reason}", instance)
        raise
    _record(request, principal, pseudo_study_id, "success", instance)
    return Response(png, media_type="image/png", headers={"Cache-Control": THUMBNAIL_CACHE})
