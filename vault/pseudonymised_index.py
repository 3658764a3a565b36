"""What pseudonymised data a caller can reach: catalog look-ups for the engineers' routes.

Every query starts from :class:`PseudonymisedStudy` or
:class:`PseudonymisedInstance` and so can only ever name pseudonymised
objects. The original :class:`Study` is joined for its case alone (reach is
:func:`can_access_case` / :func:`case_ids_within_reach` with
``read-pseudonymised``), the original :class:`Instance` and :class:`Series`
for technical values the catalog keeps in clear (modality, instance number,
transfer syntax, geometry), which the de-identification profile keeps too.
Only ``done`` instances are ever listed: quarantined ones have no object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from vault.auth.permissions import CaseAction, Principal, can_access_case, case_ids_within_reach
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Instance, Series, Study
from vault.downloads import ArchiveMember
from vault.errors import NotFound, NotReady
from vault.objects import StoredObject

PI, PS = PseudonymisedInstance, PseudonymisedStudy
_ACTION = CaseAction.READ_PSEUDONYMISED


@dataclass(frozen=True)
class Filters:
    """Exact-match (any of) filters on pseudonymised values; empty means no filter.

    ``patient_id`` matches the pseudonym, with ``*`` and ``?`` wildcards.
    """

    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    patient_id: str | None = None
    study_ids: tuple[str, ...] = field(default=())

    def study_conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.study_uids:
            conditions.append(PS.pseudo_study_uid.in_(self.study_uids))
        if self.study_ids:
            conditions.append(PS.id.in_(self.study_ids))
        if self.patient_id is not None:
            conditions.append(_matches(PS.pseudonym, self.patient_id))
        return conditions

    def instance_conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.series_uids:
            conditions.append(PI.pseudo_series_uid.in_(self.series_uids))
        if self.sop_uids:
            conditions.append(PI.pseudo_sop_uid.in_(self.sop_uids))
        if self.sop_classes:
            conditions.append(PI.sop_class_uid.in_(self.sop_classes))
        if self.modalities:
            conditions.append(Series.modality.in_(self.modalities))
        return conditions


def _matches(column: ColumnElement[str | None], pattern: str) -> ColumnElement[bool]:
    """DICOM wildcard matching (``*``, ``?``) of ``pattern`` on ``column``."""
    if "*" not in pattern and "?" not in pattern:
        return column == pattern
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


@dataclass(frozen=True)
class InstanceInfo:
    """One served (``done``) pseudonymised instance and where it sits."""

    id: str
    pseudo_study_id: str
    study_uid: str | None
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    modality: str | None
    series_id: str  # the original series' internal id (no PHI)
    stored: StoredObject

    @property
    def member(self) -> ArchiveMember:
        """Its place in an archive: ``<series UID>/<SOP instance UID>.dcm``."""
        return ArchiveMember(f"{self.series_uid}/{self.sop_uid}.dcm", self.stored)


@dataclass(frozen=True)
class SeriesInfo:
    """One pseudonymised series of a study: catalog values and its instances' count."""

    pseudo_study_id: str
    study_uid: str | None
    series_uid: str
    modality: str | None
    instance_count: int
    series_id: str
    representative_id: str  # one of its instances, for header values
    rows: int | None
    columns: int | None
    slice_thickness: float | None
    pixel_spacing: str | None


def stored_of(row: PseudonymisedInstance) -> StoredObject:
    if row.object_key is None or row.key_id is None or row.sha256 is None or row.size is None:
        raise NotFound("no such instance")
    return StoredObject(row.object_key, row.key_id, row.sha256, row.size)


def reachable_study(
    session: Session, principal: Principal, pseudo_study_id: str
) -> PseudonymisedStudy:
    """The study if it exists and its case is within ``principal``'s reach; else NotFound."""
    study = session.get(PseudonymisedStudy, pseudo_study_id)
    original = session.get(Study, study.study_id) if study is not None else None
    case_id = original.case_id if original is not None else None
    if study is None or case_id is None:
        raise NotFound("no such study")
    if not can_access_case(principal, case_id, _ACTION, session=session):
        raise NotFound("no such study")
    return study


def reachable_study_by_uid(
    session: Session, principal: Principal, study_uid: str
) -> PseudonymisedStudy:
    """The study whose pseudonymised Study Instance UID is ``study_uid``, if within reach."""
    query = studies_within_reach(principal, states=None).where(PS.pseudo_study_uid == study_uid)
    study = session.scalars(query.limit(1)).first()
    if study is None:
        raise NotFound("no such study")
    return study


def require_done(study: PseudonymisedStudy) -> None:
    """Raises NotReady (409, with the state) unless the study's copy is finished."""
    if study.state != "done":
        raise NotReady(f"the pseudonymised study is not ready (state: {study.state})")


def studies_within_reach(
    principal: Principal, *, states: tuple[str, ...] | None = ("done",)
) -> Select[tuple[PseudonymisedStudy]]:
    """The pseudonymised studies of the cases within reach (in ``states`` if given)."""
    query = (
        select(PS)
        .join(Study, Study.id == PS.study_id)
        .where(Study.case_id.in_(case_ids_within_reach(principal, _ACTION)))
    )
    return query.where(PS.state.in_(states)) if states is not None else query


def _served(principal: Principal, filters: Filters) -> Select[tuple[str]]:
    """Ids of the finished studies within reach matching the study-level filters."""
    query = studies_within_reach(principal).where(*filters.study_conditions())
    return query.with_only_columns(PS.id)


def _instance_join(query: Select[Any]) -> Select[Any]:
    return (
        query.select_from(PI)
        .join(PS, PS.id == PI.pseudo_study_id)
        .join(Instance, Instance.id == PI.source_instance_id)
        .join(Series, Series.id == Instance.series_id)
        .where(PI.state == "done")
    )


def find_studies(
    session: Session, principal: Principal, filters: Filters, *, offset: int, limit: int
) -> list[PseudonymisedStudy]:
    """Finished studies within reach matching ``filters``, oldest first, one page."""
    query = studies_within_reach(principal).where(*filters.study_conditions())
    if conditions := filters.instance_conditions():
        holding = _instance_join(select(PI.pseudo_study_id)).where(*conditions)
        query = query.where(PS.id.in_(holding))
    query = query.order_by(PS.queued_at, PS.id).offset(offset).limit(limit)
    return list(session.scalars(query))


def find_series(
    session: Session, principal: Principal, filters: Filters, *, offset: int, limit: int | None
) -> list[SeriesInfo]:
    """Series of finished studies within reach matching ``filters``, one page."""
    columns = (
        PI.pseudo_study_id,
        func.min(PS.pseudo_study_uid),
        PI.pseudo_series_uid,
        func.min(Series.modality),
        func.count(PI.id),
        func.min(Series.id),
        func.min(PI.id),
        func.min(Series.rows),
        func.min(Series.columns),
        func.min(Series.slice_thickness),
        func.min(Series.pixel_spacing),
    )
    query = _instance_join(select(*columns)).where(
        PI.pseudo_study_id.in_(_served(principal, filters)), *filters.instance_conditions()
    )
    query = query.group_by(PI.pseudo_study_id, PI.pseudo_series_uid)
    query = query.order_by(PI.pseudo_study_id, PI.pseudo_series_uid).offset(offset).limit(limit)
    return [SeriesInfo(*row) for row in session.execute(query)]


def find_instances(
    session: Session, principal: Principal, filters: Filters, *, offset: int, limit: int | None
) -> list[InstanceInfo]:
    """Served instances within reach matching ``filters``, in archive order, one page."""
    columns = (
        PI,
        PS.pseudo_study_uid,
        Instance.instance_number,
        Instance.transfer_syntax_uid,
        Series.modality,
        Series.id,
    )
    query = _instance_join(select(*columns)).where(
        PI.pseudo_study_id.in_(_served(principal, filters)), *filters.instance_conditions()
    )
    query = query.order_by(PI.pseudo_study_id, PI.pseudo_series_uid, PI.pseudo_sop_uid, PI.id)
    query = query.offset(offset).limit(limit)
    return [
        InstanceInfo(
            row.id,
            row.pseudo_study_id,
            study_uid,
            row.pseudo_series_uid or "",
            row.pseudo_sop_uid or "",
            row.sop_class_uid,
            number,
            syntax,
            modality,
            series_id,
            stored_of(row),
        )
        for row, study_uid, number, syntax, modality, series_id in session.execute(query)
    ]


def study_counts(session: Session, study_ids: list[str]) -> dict[str, tuple[int, int, list[str]]]:
    """(series, served instances, modalities) of each of ``study_ids``."""
    query = _instance_join(
        select(PI.pseudo_study_id, PI.pseudo_series_uid, func.min(Series.modality), func.count())
    )
    query = query.where(PI.pseudo_study_id.in_(study_ids))
    query = query.group_by(PI.pseudo_study_id, PI.pseudo_series_uid)
    counts: dict[str, tuple[int, int, list[str]]] = {}
    for study_id, _, modality, count in session.execute(query):
        series, instances, modalities = counts.get(study_id, (0, 0, []))
        if modality and modality not in modalities:
            modalities = sorted([*modalities, modality])
        counts[study_id] = (series + 1, instances + count, modalities)
    return counts


def representatives(session: Session, study_ids: list[str]) -> dict[str, StoredObject]:
    """One served instance's object per study (the first by id), for header values."""
    first = (
        select(func.min(PI.id))
        .where(PI.pseudo_study_id.in_(study_ids), PI.state == "done")
        .group_by(PI.pseudo_study_id)
    )
    rows = session.scalars(select(PI).where(PI.id.in_(first)))
    return {row.pseudo_study_id: stored_of(row) for row in rows}


def served_instance(
    session: Session, principal: Principal, pseudo_instance_id: str
) -> StoredObject:
    """The object of a served instance of a finished study within reach.

    Raises:
        NotFound: unknown, out of reach, or quarantined (never served).
        NotReady: its study is not finished.
    """
    row = session.get(PseudonymisedInstance, pseudo_instance_id)
    if row is None:
        raise NotFound("no such instance")
    try:
        study = reachable_study(session, principal, row.pseudo_study_id)
    except NotFound:
        raise NotFound("no such instance") from None  # told apart from unknown by nothing
    require_done(study)
    if row.state != "done":
        raise NotFound("no such instance")
    return stored_of(row)


def stored_by_id(session: Session, pseudo_instance_ids: list[str]) -> dict[str, StoredObject]:
    """The objects of the served instances among ``pseudo_instance_ids``."""
    query = select(PI).where(PI.id.in_(pseudo_instance_ids), PI.state == "done")
    return {row.id: stored_of(row) for row in session.scalars(query)}
