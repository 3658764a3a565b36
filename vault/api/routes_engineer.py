"""The engineers' download API: pseudonymised studies of their assigned cases.

Routes read only :class:`PseudonymisedStudy` and :class:`PseudonymisedInstance`
rows and the objects they name, never originals. A study is reached through
its case with :func:`can_access_case` (``read-pseudonymised``); one out of reach
answers 404 exactly like an unknown one, one not finished answers 409 with
its state, and quarantined instances are never served. Every read is recorded
in the access log with its outcome once the transfer ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crypto.errors import CryptoError
from vault.audit import AuditRecord
from vault.auth.guard import remote_of, require
from vault.auth.permissions import (
    CaseAction,
    Permission,
    Principal,
    can_access_case,
    cases_within_reach,
)
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Study
from vault.core import Vault
from vault.downloads import (
    ArchiveMember,
    MemberOpener,
    archive_etag,
    archive_size,
    stream_archive,
    stream_object,
)
from vault.errors import NotFound, NotReady, VaultError
from vault.objects import StoredObject, open_decrypted

router = APIRouter(prefix="/api/engineer", tags=["engineer"])
Engineer = Annotated[Principal, Depends(require(Permission.PSEUDONYMISED_READ))]
Id = Annotated[str, Path(max_length=32)]
_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "unknown, or not in one of the caller's cases"},
    409: {"description": "the pseudonymised study is not finished; its state is given"},
    410: {"description": "the study's data key was destroyed (erased)"},
}
Finish = Callable[[str, int], None]


class SeriesSummary(BaseModel):
    pseudo_series_uid: str
    instance_count: int


class StudySummary(BaseModel):
    case_reference: str
    pseudonym: str | None
    pseudo_study_id: str
    state: str
    instance_count: int
    quarantined_count: int
    series: list[SeriesSummary]


def _vault(request: Request) -> Vault:
    return request.app.state.vault


def _series_of(session: Session, study_ids: list[str]) -> dict[str, list[SeriesSummary]]:
    row = PseudonymisedInstance
    query = (
        select(row.pseudo_study_id, row.pseudo_series_uid, func.count())
        .where(row.pseudo_study_id.in_(study_ids), row.state == "done")
        .group_by(row.pseudo_study_id, row.pseudo_series_uid)
        .order_by(row.pseudo_study_id, row.pseudo_series_uid)
    )
    series: dict[str, list[SeriesSummary]] = {}
    for study_id, series_uid, count in session.execute(query):
        series.setdefault(study_id, []).append(
            SeriesSummary(pseudo_series_uid=series_uid, instance_count=count)
        )
    return series


@router.get("/studies", response_model=list[StudySummary])
def list_studies(request: Request, principal: Engineer) -> list[StudySummary]:
    """The pseudonymised studies of the caller's cases, with their series. No PHI."""
    with _vault(request).catalog.read_session() as session:
        action = CaseAction.READ_PSEUDONYMISED
        cases = {
            case.id: case.reference
            for case in cases_within_reach(principal, action, session=session)
        }
        query = (
            select(PseudonymisedStudy, Study.case_id)
            .join(Study, Study.id == PseudonymisedStudy.study_id)
            .where(Study.case_id.in_(list(cases)))
            .order_by(PseudonymisedStudy.queued_at, PseudonymisedStudy.id)
        )
        found = [(study, case_id) for study, case_id in session.execute(query)]
        series = _series_of(session, [study.id for study, _ in found])
        return [
            StudySummary(
                case_reference=cases[case_id or ""],
                pseudonym=study.pseudonym,
                pseudo_study_id=study.id,
                state=study.state,
                instance_count=study.instance_count,
                quarantined_count=study.quarantined_count,
                series=series.get(study.id, []),
            )
            for study, case_id in found
        ]


def _reachable_study(
    session: Session, principal: Principal, pseudo_study_id: str
) -> PseudonymisedStudy:
    """The study if it exists and its case is within ``principal``'s reach; else NotFound."""
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
    return study


def _require_done(study: PseudonymisedStudy) -> None:
    if study.state != "done":
        raise NotReady(f"the pseudonymised study is not ready (state: {study.state})")


def _stored(row: PseudonymisedInstance) -> StoredObject:
    if row.object_key is None or row.key_id is None or row.sha256 is None or row.size is None:
        raise NotFound("no such instance")
    return StoredObject(row.object_key, row.key_id, row.sha256, row.size)


def _members(session: Session, pseudo_study_id: str) -> list[ArchiveMember]:
    """The study's served instances in archive order: by series, then SOP instance UID."""
    row = PseudonymisedInstance
    query = (
        select(row)
        .where(row.pseudo_study_id == pseudo_study_id, row.state == "done")
        .order_by(row.pseudo_series_uid, row.pseudo_sop_uid, row.id)
    )
    return [
        ArchiveMember(f"{item.pseudo_series_uid}/{item.pseudo_sop_uid}.dcm", _stored(item))
        for item in session.scalars(query)
    ]


def _opener(vault: Vault, key_ids: set[str]) -> MemberOpener:
    """Opens members with their data keys, all unwrapped before the first byte is sent."""
    keys = {key_id: vault.keyring.data_key(key_id) for key_id in key_ids}
    return lambda stored: open_decrypted(vault.store, keys[stored.key_id], stored)


def _recorder(request: Request, principal: Principal, action: str, kind: str, oid: str) -> Finish:
    vault, remote = _vault(request), remote_of(request)

    def finish(outcome: str, sent: int) -> None:
        record = AuditRecord(
            principal.actor,
            action,
            outcome=outcome,
            object_type=kind,
            object_id=oid,
            remote=remote,
            detail={"bytes": sent},
        )
        vault.audit.record(record)

    return finish


def _audited(first: bytes, rest: Iterator[bytes], finish: Finish) -> Iterator[bytes]:
    """``first`` then ``rest``, recording the outcome when the stream ends or is dropped."""
    sent, outcome = 0, "incomplete"
    try:
        for piece in _chain(first, rest):
            yield piece
            sent += len(piece)
        outcome = "success"
    except (CryptoError, VaultError) as exc:
        outcome = f"failure:{exc.reason}"
        raise
    finally:
        finish(outcome, sent)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _started(stream: Iterator[bytes], finish: Finish) -> Iterator[bytes]:
    """Produce the first piece now, so that early failures answer an error status."""
    try:
        first = next(stream, b"")
    except (CryptoError, VaultError) as exc:
        finish(f"failure:{exc.reason}", 0)
        raise
    return _audited(first, stream, finish)


def _served_instance(
    session: Session, principal: Principal, pseudo_instance_id: str
) -> StoredObject:
    """The object of a stored instance of a finished study within reach.

    Raises:
        NotFound: unknown, out of reach, or quarantined (never served).
        NotReady: its study is not finished.
    """
    row = session.get(PseudonymisedInstance, pseudo_instance_id)
    if row is None:
        raise NotFound("no such instance")
    _require_done(_reachable_study(session, principal, row.pseudo_study_id))
    if row.state != "done":
        raise NotFound("no such instance")
    return _stored(row)


@router.get(
    "/studies/{pseudo_study_id}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **_ERRORS},
)
def download_study(request: Request, principal: Engineer, pseudo_study_id: Id) -> StreamingResponse:
    """The whole pseudonymised study as a ZIP, streamed while it is produced.

    Members are ``<pseudo series UID>/<pseudo SOP instance UID>.dcm`` in stored
    mode; quarantined instances are left out. The output is deterministic: the
    ETag is stable and Content-Length is exact (absent only past ZIP64 sizes).
    A member failing verification aborts the transfer.
    """
    vault = _vault(request)
    finish = _recorder(request, principal, "study.download", "pseudonymised-study", pseudo_study_id)
    try:
        with vault.catalog.read_session() as session:
            study = _reachable_study(session, principal, pseudo_study_id)
            _require_done(study)
            members = _members(session, study.id)
        opener = _opener(vault, {member.stored.key_id for member in members})
    except (VaultError, CryptoError) as exc:
        finish(exc.reason, 0)
        raise
    stream = _started(stream_archive(members, opener), finish)
    headers = {
        "ETag": archive_etag(members),
        "Content-Disposition": f'attachment; filename="study-{pseudo_study_id}.zip"',
    }
    size = archive_size(members)
    if size is not None:
        headers["Content-Length"] = str(size)
    return StreamingResponse(stream, media_type="application/zip", headers=headers)


@router.get(
    "/instances/{pseudo_instance_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/dicom": {}}}, **_ERRORS},
)
def download_instance(
    request: Request, principal: Engineer, pseudo_instance_id: Id
) -> StreamingResponse:
    """One pseudonymised instance as a DICOM Part 10 file (``application/dicom``)."""
    vault = _vault(request)
    finish = _recorder(
        request, principal, "instance.read", "pseudonymised-instance", pseudo_instance_id
    )
    try:
        with vault.catalog.read_session() as session:
            stored = _served_instance(session, principal, pseudo_instance_id)
        opener = _opener(vault, {stored.key_id})
    except (VaultError, CryptoError) as exc:
        finish(exc.reason, 0)
        raise
    stream = _started(stream_object(stored, opener), finish)
    headers = {"ETag": f'"{stored.sha256}"', "Content-Length": str(stored.size)}
    return StreamingResponse(stream, media_type="application/dicom", headers=headers)
