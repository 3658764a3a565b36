"""The JSON bodies of the engineers' REST API: pseudonymised studies, series and instances.

Nothing here is identifying: internal ids, pseudonymised UIDs (keyed
``2.25.`` UIDs made by the de-identification engine), the pseudonym,
technical values (modality, SOP class, transfer syntax, geometry, sizes,
checksums), counts, states and PHI-free reason codes. No name, date,
description or original UID is ever put into these bodies.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class SeriesSummary(BaseModel):
    pseudo_series_uid: str
    instance_count: int
    modality: str | None = None


class StudySummary(BaseModel):
    case_reference: str
    pseudonym: str | None
    pseudo_study_id: str
    state: str
    instance_count: int
    quarantined_count: int
    modalities: list[str]
    date_shifted: bool | None  # None until the copy is done
    series: list[SeriesSummary]


class SeriesGeometry(BaseModel):
    rows: int | None
    columns: int | None
    slice_thickness: float | None
    pixel_spacing: str | None


class SeriesMetadata(BaseModel):
    pseudo_study_id: str
    pseudo_series_uid: str
    modality: str | None
    instance_count: int
    geometry: SeriesGeometry
    archive_bytes: int


class InstanceMetadata(BaseModel):
    pseudo_instance_id: str
    pseudo_sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    size: int
    sha256: str


class SeriesDetail(SeriesMetadata):
    instances: list[InstanceMetadata]


class StudyMetadata(BaseModel):
    case_reference: str
    pseudonym: str | None
    pseudo_study_id: str
    pseudo_study_uid: str | None
    state: str
    reason: str | None  # a PHI-free code when de-identification failed or is retried
    instance_count: int
    quarantined_count: int
    modalities: list[str]
    date_shifted: bool | None
    patient_identity_removed: bool | None
    deidentification_methods: list[str]
    queued_at: datetime
    finished_at: datetime | None
    archive_bytes: int | None  # None until the copy is done
    series: list[SeriesMetadata]
