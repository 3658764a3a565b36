"""Catalog reads and writes of the ingest pipeline (private to dicom_ingest).

Identifying values are turned into keyed digests here, at the boundary: the
rows written hold digests, never the UIDs or patient identifiers themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_ingest.validation import InstanceFacts
from vault.catalog.index import UidIndex
from vault.catalog.models import Case, Instance, Organisation, Series, Study
from vault.errors import ConflictingResend, NotFound, StorageUnavailable
from vault.keyring import PendingKey

if TYPE_CHECKING:
    from dicom_ingest.pipeline import IngestOrigin, IngestResult
    from vault.core import Vault

DEFAULT_RETENTION_DAYS = 5 * 365 + 1


@dataclass(frozen=True)
class NewInstance:
    """An encrypted, stored object waiting to be catalogued."""

    facts: InstanceFacts
    sha256: str
    size: int
    object_key: str
    key_id: str


@dataclass(frozen=True)
class StoredInstance:
    instance_id: str
    study_id: str
    series_id: str
    sha256: str
    size: int

    @classmethod
    def of(cls, row: Instance) -> StoredInstance:
        return cls(row.id, row.study_id, row.series_id, row.sha256, row.size)

    def as_result(self, *, duplicate: bool) -> IngestResult:
        from dicom_ingest.pipeline import IngestResult

        return IngestResult(
            instance_id=self.instance_id,
            study_id=self.study_id,
            series_id=self.series_id,
            sha256=self.sha256,
            size=self.size,
            duplicate=duplicate,
        )


@dataclass(frozen=True)
class StudyLookup:
    """What the catalog already knows about an incoming instance's study."""

    study_id: str | None
    case_id: str | None
    study_key_id: str | None
    retention_days: int
    existing: StoredInstance | None
    other_patient_in_case: bool


def refuse_if_conflicting(stored_sha256: str, received_sha256: str) -> None:
    """Raise ConflictingResend unless a resend has the stored instance's bytes."""
    if stored_sha256 != received_sha256:
        raise ConflictingResend(
            "an instance with the same SOP Instance UID but different content is already stored"
        )


def _other_patient_in_case(session: Session, case_id: str | None, patient: str) -> bool:
    if case_id is None:
        return False
    case = session.get(Case, case_id)
    if case is None:
        raise NotFound("no such case")
    if case.allow_multiple_patients:
        return False
    query = select(Study.id).where(Study.case_id == case_id, Study.patient_digest != patient)
    return session.scalar(query.limit(1)) is not None


def find_study(
    session: Session,
    index: UidIndex,
    facts: InstanceFacts,
    organisation_id: str,
    case_id: str | None,
) -> StudyLookup:
    """Look up the study, the instance and the case rules for ``facts``."""
    organisation = session.get(Organisation, organisation_id)
    if organisation is None:
        raise NotFound("no such organisation")
    study_digest = index.digest("study", facts.study_uid)
    study = session.scalar(
        select(Study).where(
            Study.organisation_id == organisation_id, Study.study_uid_digest == study_digest
        )
    )
    patient = index.digest("patient", facts.patient_key)
    other = _other_patient_in_case(session, case_id, patient)
    if study is None:
        return StudyLookup(None, None, None, organisation.retention_days, None, other)
    existing = session.scalar(
        select(Instance).where(
            Instance.study_id == study.id,
            Instance.sop_uid_digest == index.digest("instance", facts.sop_instance_uid),
        )
    )
    return StudyLookup(
        study_id=study.id,
        case_id=study.case_id,
        study_key_id=study.data_key_id,
        retention_days=organisation.retention_days,
        existing=StoredInstance.of(existing) if existing else None,
        other_patient_in_case=other,
    )


def _study(
    session: Session,
    vault: Vault,
    facts: InstanceFacts,
    origin: IngestOrigin,
    pending: PendingKey | None,
    retention: timedelta,
) -> Study:
    digest = vault.index.digest("study", facts.study_uid)
    study = session.scalar(
        select(Study).where(
            Study.organisation_id == origin.organisation_id, Study.study_uid_digest == digest
        )
    )
    if pending is not None:
        vault.keyring.persist(session, pending)
    if study is not None:
        return study
    if pending is None:
        raise StorageUnavailable("the study disappeared while its instance was being stored")
    now = vault.clock.now()
    study = Study(
        organisation_id=origin.organisation_id,
        case_id=origin.case_id,
        study_uid_digest=digest,
        patient_digest=vault.index.digest("patient", facts.patient_key),
        data_key_id=pending.key.key_id,
        received_at=now,
        last_instance_at=now,
        expires_at=now + retention,
    )
    session.add(study)
    session.flush()
    return study


def _series(session: Session, vault: Vault, study: Study, facts: InstanceFacts) -> Series:
    digest = vault.index.digest("series", facts.series_uid)
    series = session.scalar(
        select(Series).where(Series.study_id == study.id, Series.series_uid_digest == digest)
    )
    if series is None:
        series = Series(
            study_id=study.id,
            series_uid_digest=digest,
            modality=facts.modality,
            sop_class_uid=facts.sop_class_uid,
            rows=facts.rows,
            columns=facts.columns,
            slice_thickness=facts.slice_thickness,
            pixel_spacing=facts.pixel_spacing,
            created_at=vault.clock.now(),
        )
        session.add(series)
        session.flush()
    return series


def record_instance(
    session: Session,
    vault: Vault,
    new: NewInstance,
    origin: IngestOrigin,
    pending: PendingKey | None,
    retention: timedelta,
) -> tuple[StoredInstance, bool]:
    """Insert ``new`` (and its study, series, key); return it and whether it was a duplicate.

    Raises:
        ConflictingResend: the same instance is stored with other bytes.
    """
    facts = new.facts
    study = _study(session, vault, facts, origin, pending, retention)
    sop_digest = vault.index.digest("instance", facts.sop_instance_uid)
    existing = session.scalar(
        select(Instance).where(Instance.study_id == study.id, Instance.sop_uid_digest == sop_digest)
    )
    if existing is not None:
        refuse_if_conflicting(existing.sha256, new.sha256)
        return StoredInstance.of(existing), True
    series = _series(session, vault, study, facts)
    now = vault.clock.now()
    instance = Instance(
        study_id=study.id,
        series_id=series.id,
        sop_uid_digest=sop_digest,
        sop_class_uid=facts.sop_class_uid,
        transfer_syntax_uid=facts.transfer_syntax_uid,
        instance_number=facts.instance_number,
        slice_position=facts.slice_position,
        sha256=new.sha256,
        size=new.size,
        object_key=new.object_key,
        key_id=new.key_id,
        received_at=now,
    )
    session.add(instance)
    session.execute(
        update(Study)
        .where(Study.id == study.id)
        .values(
            instance_count=Study.instance_count + 1,
            total_bytes=Study.total_bytes + new.size,
            last_instance_at=now,
        )
    )
    session.execute(
        update(Series)
        .where(Series.id == series.id)
        .values(instance_count=Series.instance_count + 1)
    )
    session.flush()
    return StoredInstance.of(instance), False
