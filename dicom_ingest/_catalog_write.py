"""Catalog writes of the ingest pipeline (private to dicom_ingest).

One write per stored instance, run inside a shared transaction by
:mod:`dicom_ingest._group_commit`: the instance row (and its study, series
and data key when new) and the study and series counters, in SQLAlchemy Core
statements built once at import. Identifying values are written as keyed
digests only. A new study of a person under an active restriction of
processing is restricted in the same transaction
(:func:`vault.dsr_restriction.restrict_on_arrival`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from dicom_ingest._catalog import (
    NewInstance,
    StoredInstance,
    StudyLookup,
    refuse_if_conflicting,
)
from dicom_ingest.validation import InstanceFacts
from vault.catalog.models import Instance, Series, Study, new_id
from vault.dsr_restriction import restrict_on_arrival
from vault.errors import StorageUnavailable
from vault.keyring import PendingKey

if TYPE_CHECKING:
    from dicom_ingest.pipeline import IngestOrigin
    from vault.core import Vault

_studies, _series, _instances = Study.__table__, Series.__table__, Instance.__table__

_STUDY_ID = select(_studies.c.id).where(
    _studies.c.organisation_id == bindparam("organisation"),
    _studies.c.study_uid_digest == bindparam("study"),
)
_EXISTING = select(
    _instances.c.id,
    _instances.c.study_id,
    _instances.c.series_id,
    _instances.c.sha256,
    _instances.c.size,
).where(
    _instances.c.study_id == bindparam("study_id"), _instances.c.sop_uid_digest == bindparam("sop")
)
_SERIES_ID = select(_series.c.id).where(
    _series.c.study_id == bindparam("study_id"), _series.c.series_uid_digest == bindparam("digest")
)
_INSERT_STUDY = insert(_studies)
_INSERT_SERIES = insert(_series)
_INSERT_INSTANCE = insert(_instances)
_BUMP_STUDY = (
    update(_studies)
    .where(_studies.c.id == bindparam("study_id"))
    .values(
        instance_count=_studies.c.instance_count + 1,
        total_bytes=_studies.c.total_bytes + bindparam("size"),
        last_instance_at=bindparam("now"),
    )
)
_BUMP_SERIES = (
    update(_series)
    .where(_series.c.id == bindparam("series_id"))
    .values(instance_count=_series.c.instance_count + 1)
)


class SeriesCache:
    """Series ids by (study id, series digest): series rows are never renamed,
    and a study recreated after erasure has a new id, so an entry cannot
    point at another series. A stale entry (a series erased with its study)
    fails the instance's foreign key and the careful retry bypasses the cache."""

    def __init__(self, size: int = 4096) -> None:
        self._ids: dict[tuple[str, str], str] = {}
        self._size = size

    def get(self, study_id: str, digest: str) -> str | None:
        return self._ids.get((study_id, digest))

    def put(self, study_id: str, digest: str, series_id: str) -> None:
        if len(self._ids) >= self._size:
            self._ids.clear()
        self._ids[(study_id, digest)] = series_id


@dataclass(frozen=True)
class WriteContext:
    """What one catalog write needs besides the instance itself."""

    vault: Vault
    origin: IngestOrigin
    lookup: StudyLookup
    pending: PendingKey | None
    series: SeriesCache
    careful: bool  # a retry: trust neither the lookup nor the cache


def _persist_key(connection: Connection, vault: Vault, pending: PendingKey) -> None:
    """Record a new data key through the keyring (the one owner of key rows).

    The session joins the caller's transaction as it stands, savepoint
    included (``rollback_only``): closing it neither commits nor undoes what
    it flushed. SQLAlchemy's default would, inside the savepoint of a shared
    group commit, give the session a savepoint of its own and roll it back
    at close, losing the key row.
    """
    with Session(bind=connection, join_transaction_mode="rollback_only") as session:
        vault.keyring.persist(session, pending)
        session.flush()


def _study_id(connection: Connection, ctx: WriteContext, facts: InstanceFacts) -> str:
    """The study's id, inserting the study (and persisting its new key) if needed."""
    vault, origin = ctx.vault, ctx.origin
    if ctx.pending is not None:
        _persist_key(connection, vault, ctx.pending)
    if ctx.lookup.study_id is not None and not ctx.careful:
        return ctx.lookup.study_id
    digest = vault.index.digest("study", facts.study_uid)
    params = {"organisation": origin.organisation_id, "study": digest}
    found = connection.execute(_STUDY_ID, params).scalar()
    if found is not None:
        return str(found)
    if ctx.pending is None:
        raise StorageUnavailable("the study disappeared while its instance was being stored")
    now = vault.clock.now()
    study_id = new_id()
    connection.execute(
        _INSERT_STUDY,
        {
            "id": study_id,
            "organisation_id": origin.organisation_id,
            "case_id": origin.case_id,
            "study_uid_digest": digest,
            "patient_digest": ctx.lookup.patient_digest,
            "data_key_id": ctx.pending.key.key_id,
            "received_at": now,
            "last_instance_at": now,
            "expires_at": now + timedelta(days=ctx.lookup.retention_days),
        },
    )
    restrict_on_arrival(vault, connection, study_id)  # GDPR art. 18 covers later studies
    return study_id


def _series_id(
    connection: Connection, ctx: WriteContext, study_id: str, facts: InstanceFacts
) -> str:
    vault = ctx.vault
    digest = vault.index.digest("series", facts.series_uid)
    cached = None if ctx.careful else ctx.series.get(study_id, digest)
    if cached is not None:
        return cached
    series_id = connection.execute(_SERIES_ID, {"study_id": study_id, "digest": digest}).scalar()
    if series_id is None:
        series_id = new_id()
        connection.execute(
            _INSERT_SERIES,
            {
                "id": series_id,
                "study_id": study_id,
                "series_uid_digest": digest,
                "modality": facts.modality,
                "sop_class_uid": facts.sop_class_uid,
                "rows": facts.rows,
                "columns": facts.columns,
                "slice_thickness": facts.slice_thickness,
                "pixel_spacing": facts.pixel_spacing,
                "created_at": vault.clock.now(),
            },
        )
    ctx.series.put(study_id, digest, str(series_id))
    return str(series_id)


def record_instance(
    connection: Connection, ctx: WriteContext, new: NewInstance
) -> tuple[StoredInstance, bool]:
    """Insert ``new`` (and its study, series, key); return it and whether it was a duplicate.

    On a first attempt the lookup made just before is trusted: a concurrent
    insert of the same study, series or instance then fails a unique
    constraint, and the caller retries with ``ctx.careful`` set.

    Raises:
        ConflictingResend: the same instance is stored with other bytes.
    """
    facts, vault = new.facts, ctx.vault
    study_id = _study_id(connection, ctx, facts)
    sop_digest = vault.index.digest("instance", facts.sop_instance_uid)
    if ctx.careful:
        row = connection.execute(_EXISTING, {"study_id": study_id, "sop": sop_digest}).first()
        if row is not None:
            refuse_if_conflicting(row.sha256, new.sha256)
            return StoredInstance(row.id, row.study_id, row.series_id, row.sha256, row.size), True
    series_id = _series_id(connection, ctx, study_id, facts)
    now = vault.clock.now()
    instance_id = new_id()
    connection.execute(
        _INSERT_INSTANCE,
        {
            "id": instance_id,
            "study_id": study_id,
            "series_id": series_id,
            "sop_uid_digest": sop_digest,
            "sop_class_uid": facts.sop_class_uid,
            "transfer_syntax_uid": facts.transfer_syntax_uid,
            "instance_number": facts.instance_number,
            "slice_position": facts.slice_position,
            "sha256": new.sha256,
            "size": new.size,
            "object_key": new.object_key,
            "key_id": new.key_id,
            "received_at": now,
        },
    )
    bumped = connection.execute(_BUMP_STUDY, {"study_id": study_id, "size": new.size, "now": now})
    if bumped.rowcount != 1:
        raise StorageUnavailable("the study disappeared while its instance was being stored")
    connection.execute(_BUMP_SERIES, {"series_id": series_id})
    return StoredInstance(instance_id, study_id, series_id, new.sha256, new.size), False
