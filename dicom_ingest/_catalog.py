"""Catalog reads of the ingest pipeline, and what they return (private to dicom_ingest).

Identifying values are turned into keyed digests here, at the boundary: the
rows written hold digests, never the UIDs or patient identifiers themselves.

Everything here is SQLAlchemy Core on a :class:`~sqlalchemy.Connection`:
statements are built once at import (their compiled form is cached by the
engine), no ORM unit of work runs per instance. One read answers "which
study, is its data key alive, is this instance already stored" in a single
round trip. The writes are in :mod:`dicom_ingest._catalog_write`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, bindparam, select

from dicom_ingest.validation import InstanceFacts
from vault.case_rules import other_patient_in_case
from vault.catalog.index import UidIndex
from vault.catalog.models import DataKeyRecord, Instance, Organisation, Study
from vault.errors import ConflictingResend, NotFound
from vault.issuers import patient_key

if TYPE_CHECKING:
    from dicom_ingest.pipeline import IngestResult

DEFAULT_RETENTION_DAYS = 5 * 365 + 1

_studies, _instances = Study.__table__, Instance.__table__
_keys, _organisations = DataKeyRecord.__table__, Organisation.__table__

_LOOKUP = (
    select(
        _studies.c.id,
        _studies.c.case_id,
        _studies.c.data_key_id,
        _keys.c.wrapped.is_(None).label("key_destroyed"),
        _instances.c.id.label("instance_id"),
        _instances.c.series_id,
        _instances.c.sha256,
        _instances.c.size,
    )
    .select_from(
        _studies.join(_keys, _keys.c.id == _studies.c.data_key_id).outerjoin(
            _instances,
            and_(
                _instances.c.study_id == _studies.c.id,
                _instances.c.sop_uid_digest == bindparam("sop"),
            ),
        )
    )
    .where(
        _studies.c.organisation_id == bindparam("organisation"),
        _studies.c.study_uid_digest == bindparam("study"),
    )
)
_RETENTION = select(_organisations.c.retention_days).where(
    _organisations.c.id == bindparam("organisation")
)


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
    key_destroyed: bool
    retention_days: int
    existing: StoredInstance | None
    other_patient_in_case: bool
    patient_digest: str  # of the instance's patient (:func:`vault.issuers.patient_key`)


def refuse_if_conflicting(stored_sha256: str, received_sha256: str) -> None:
    """Raise ConflictingResend unless a resend has the stored instance's bytes."""
    if stored_sha256 != received_sha256:
        raise ConflictingResend("another instance with this SOP Instance UID is stored")


def find_study(
    connection: Connection,
    index: UidIndex,
    facts: InstanceFacts,
    organisation_id: str,
    case_id: str | None,
) -> StudyLookup:
    """Look up the study, its data key, the instance and the case rules for ``facts``."""
    key = patient_key(connection, organisation_id, facts.patient_id, facts.issuer_of_patient_id)
    patient = index.digest("patient", key)
    other = other_patient_in_case(connection, case_id, patient)
    row = connection.execute(
        _LOOKUP,
        {
            "organisation": organisation_id,
            "study": index.digest("study", facts.study_uid),
            "sop": index.digest("instance", facts.sop_instance_uid),
        },
    ).first()
    if row is None:
        retention = connection.execute(_RETENTION, {"organisation": organisation_id}).scalar()
        if retention is None:
            raise NotFound("no such organisation")
        return StudyLookup(None, None, None, False, retention, None, other, patient)
    existing = None
    if row.instance_id is not None:
        existing = StoredInstance(row.instance_id, row.id, row.series_id, row.sha256, row.size)
    return StudyLookup(
        study_id=row.id,
        case_id=row.case_id,
        study_key_id=row.data_key_id,
        key_destroyed=bool(row.key_destroyed),
        retention_days=DEFAULT_RETENTION_DAYS,  # only a new study needs its organisation's
        existing=existing,
        other_patient_in_case=other,
        patient_digest=patient,
    )
