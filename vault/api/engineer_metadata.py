"""The engineers' REST metadata: study listings, one study, one series, built from the catalog.

Each builder reads the pseudonymised catalog within the caller's reach
(:mod:`vault.pseudonymised_index`) and returns the PHI-free bodies of
:mod:`vault.api.engineer_models`. The de-identification marks (dates
shifted, identity removed, the profile's methods) are read from one
pseudonymised header per finished study, since that header is what states
how its copy was made; a study whose header cannot be read (a damaged
object) has unknown marks, and its download fails loudly instead.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.api.engineer_models import (
    InstanceMetadata,
    SeriesDetail,
    SeriesGeometry,
    SeriesMetadata,
    SeriesSummary,
    StudyMetadata,
    StudySummary,
)
from vault.auth.permissions import Principal
from vault.catalog.deid import PseudonymisedStudy
from vault.catalog.models import Case, Study
from vault.core import Vault
from vault.dicom_headers import DeidMarks, deid_marks, header_or_none
from vault.downloads import ArchiveMember, archive_size, opener
from vault.errors import NotFound
from vault.pseudonymised_index import (
    Filters,
    InstanceInfo,
    SeriesInfo,
    find_instances,
    find_series,
    reachable_study,
    representatives,
    require_done,
    studies_within_reach,
)

_NO_MARKS = DeidMarks(None, None, ())


def _marks(
    vault: Vault, studies: dict[str, PseudonymisedStudy], session: Session
) -> dict[str, DeidMarks]:
    """The marks of each finished study among ``studies`` whose header reads."""
    done = [study_id for study_id, study in studies.items() if study.state == "done"]
    stored = representatives(session, done)
    open_member = opener(vault, {item.key_id for item in stored.values()})
    headers = {key: header_or_none(open_member, item) for key, item in stored.items()}
    return {key: deid_marks(header) for key, header in headers.items() if header is not None}


def study_instances(
    session: Session, principal: Principal, study: PseudonymisedStudy, series_uid: str | None
) -> list[InstanceInfo]:
    """The study's served instances (of one series if given) in archive order."""
    filters = Filters(study_ids=(study.id,), series_uids=(series_uid,) if series_uid else ())
    return find_instances(session, principal, filters, offset=0, limit=None)


def _series_metadata(info: SeriesInfo, archive_bytes: int) -> SeriesMetadata:
    geometry = SeriesGeometry(
        rows=info.rows,
        columns=info.columns,
        slice_thickness=info.slice_thickness,
        pixel_spacing=info.pixel_spacing,
    )
    return SeriesMetadata(
        pseudo_study_id=info.pseudo_study_id,
        pseudo_series_uid=info.series_uid,
        modality=info.modality,
        instance_count=info.instance_count,
        geometry=geometry,
        archive_bytes=archive_bytes,
    )


def _series_bytes(members: list[ArchiveMember], info: SeriesInfo) -> int:
    return archive_size([m for m in members if m.name.startswith(f"{info.series_uid}/")])


def study_summaries(vault: Vault, principal: Principal) -> list[StudySummary]:
    """Every pseudonymised study of the caller's cases, oldest first, with its series."""
    with vault.catalog.read_session() as session:
        query = studies_within_reach(principal, states=None).add_columns(Case.reference)
        query = query.join(Case, Case.id == Study.case_id)
        query = query.order_by(PseudonymisedStudy.queued_at, PseudonymisedStudy.id)
        found = {study.id: (study, reference) for study, reference in session.execute(query)}
        filters = Filters(study_ids=tuple(found))
        series = find_series(session, principal, filters, offset=0, limit=None)
        marks = _marks(vault, {key: study for key, (study, _) in found.items()}, session)
    by_study: dict[str, list[SeriesSummary]] = {}
    for info in series:
        summary = SeriesSummary(
            pseudo_series_uid=info.series_uid,
            instance_count=info.instance_count,
            modality=info.modality,
        )
        by_study.setdefault(info.pseudo_study_id, []).append(summary)
    return [
        StudySummary(
            case_reference=reference,
            pseudonym=study.pseudonym,
            pseudo_study_id=study.id,
            state=study.state,
            instance_count=study.instance_count,
            quarantined_count=study.quarantined_count,
            modalities=sorted({s.modality for s in by_study.get(study.id, []) if s.modality}),
            date_shifted=marks.get(study.id, _NO_MARKS).date_shifted,
            series=by_study.get(study.id, []),
        )
        for study, reference in found.values()
    ]


def study_metadata_of(vault: Vault, principal: Principal, pseudo_study_id: str) -> StudyMetadata:
    """One study within reach, finished or not (its state says which).

    Raises:
        NotFound: unknown or out of reach.
    """
    with vault.catalog.read_session() as session:
        study = reachable_study(session, principal, pseudo_study_id)
        query = select(Case.reference).join(Study, Study.case_id == Case.id)
        reference = session.scalar(query.where(Study.id == study.study_id)) or ""
        filters = Filters(study_ids=(study.id,))
        series = find_series(session, principal, filters, offset=0, limit=None)
        members = [info.member for info in study_instances(session, principal, study, None)]
        marks = _marks(vault, {study.id: study}, session).get(study.id, _NO_MARKS)
    return StudyMetadata(
        case_reference=reference,
        pseudonym=study.pseudonym,
        pseudo_study_id=study.id,
        pseudo_study_uid=study.pseudo_study_uid,
        state=study.state,
        reason=study.reason,
        instance_count=study.instance_count,
        quarantined_count=study.quarantined_count,
        modalities=sorted({info.modality for info in series if info.modality}),
        date_shifted=marks.date_shifted,
        patient_identity_removed=marks.identity_removed,
        deidentification_methods=list(marks.methods),
        queued_at=study.queued_at,
        finished_at=study.finished_at,
        archive_bytes=archive_size(members) if study.state == "done" else None,
        series=[_series_metadata(info, _series_bytes(members, info)) for info in series],
    )


def series_detail_of(
    vault: Vault, principal: Principal, pseudo_study_id: str, series_uid: str
) -> tuple[SeriesDetail, str]:
    """One series of a finished study within reach, and its original series' internal id.

    Raises:
        NotFound: unknown or out of reach, or no such series in the study.
        NotReady: the study is not finished.
    """
    with vault.catalog.read_session() as session:
        study = reachable_study(session, principal, pseudo_study_id)
        require_done(study)
        filters = Filters(study_ids=(study.id,), series_uids=(series_uid,))
        found = find_series(session, principal, filters, offset=0, limit=None)
        instances = study_instances(session, principal, study, series_uid)
    if not found:
        raise NotFound("no such series")
    summary = _series_metadata(found[0], archive_size([info.member for info in instances]))
    listed = [
        InstanceMetadata(
            pseudo_instance_id=info.id,
            pseudo_sop_uid=info.sop_uid,
            sop_class_uid=info.sop_class_uid,
            instance_number=info.instance_number,
            transfer_syntax_uid=info.transfer_syntax_uid,
            size=info.stored.size,
            sha256=info.stored.sha256,
        )
        for info in instances
    ]
    return SeriesDetail(**summary.model_dump(), instances=listed), found[0].series_id
