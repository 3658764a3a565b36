"""Retention by crypto-shredding: a study is erased when its time is up.

Each study expires ``organisation.retention_days`` after it was received
(``Study.expires_at``, set at ingest). :func:`expire_studies` erases every
expired study that no active legal hold covers, in three steps, each safe to
repeat if the previous run stopped half-way:

1. destroy its data keys (the study's, any other key of its instances, and
   its pseudonymised copy's): from then on no copy of its objects, in the
   store or in any backup, can be decrypted;
2. delete its objects (originals and pseudonymised) from the store;
3. delete its catalog rows, leave a PHI-free :class:`Tombstone` (internal id,
   dates, reason ``expired``) and record ``study.expire`` (actor ``system``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, or_, select
from sqlalchemy.orm import Session

from vault.audit import AuditRecord
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Instance, Organisation, Series, Study
from vault.catalog.retention import Tombstone
from vault.core import Vault
from vault.errors import StorageUnavailable
from vault.holds import under_hold

EXPIRED = "expired"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Parts:
    """What one study is made of: its keys and objects, and what the tombstone keeps."""

    study_id: str
    organisation_id: str
    received_at: datetime
    instance_count: int
    key_ids: frozenset[str]
    object_keys: tuple[str, ...]


def _pseudo_study_ids(study_id: str) -> Select[tuple[str]]:
    return select(PseudonymisedStudy.id).where(PseudonymisedStudy.study_id == study_id)


def _pseudo_instances(study_id: str) -> Select[tuple[PseudonymisedInstance]]:
    originals = select(Instance.id).where(Instance.study_id == study_id)
    return select(PseudonymisedInstance).where(
        or_(
            PseudonymisedInstance.pseudo_study_id.in_(_pseudo_study_ids(study_id)),
            PseudonymisedInstance.source_instance_id.in_(originals),
        )
    )


def _parts(session: Session, study: Study) -> _Parts:
    instances = session.execute(
        select(Instance.key_id, Instance.object_key).where(Instance.study_id == study.id)
    ).all()
    copies = session.scalars(_pseudo_instances(study.id)).all()
    copy_keys = session.scalars(
        select(PseudonymisedStudy.data_key_id).where(PseudonymisedStudy.study_id == study.id)
    ).all()
    key_ids = {study.data_key_id, *(row[0] for row in instances), *copy_keys}
    key_ids |= {c.key_id for c in copies}
    objects = [row[1] for row in instances] + [c.object_key for c in copies]
    return _Parts(
        study_id=study.id,
        organisation_id=study.organisation_id,
        received_at=study.received_at,
        instance_count=len(instances),
        key_ids=frozenset(k for k in key_ids if k is not None),
        object_keys=tuple(o for o in objects if o is not None),
    )


def _due(vault: Vault, now: datetime) -> list[str]:
    """Ids of expired studies no active hold covers, oldest expiry first."""
    unheld = ~under_hold()
    dated = select(Study.id).where(Study.expires_at <= now, unheld).order_by(Study.expires_at)
    undated = (
        select(Study.id, Study.received_at, Organisation.retention_days)
        .join(Organisation, Organisation.id == Study.organisation_id)
        .where(Study.expires_at.is_(None), unheld)
    )
    with vault.catalog.read_session() as session:
        due = list(session.scalars(dated))
        for study_id, received_at, days in session.execute(undated):
            if received_at + timedelta(days=days) <= now:
                due.append(study_id)
    return due


def _shred_keys(vault: Vault, study_id: str) -> _Parts | None:
    """Step 1: destroy the study's keys, unless it is gone or now held."""
    with vault.catalog.session() as session:
        study = session.scalar(select(Study).where(Study.id == study_id, ~under_hold()))
        if study is None:
            return None
        parts = _parts(session, study)
        for key_id in sorted(parts.key_ids):
            vault.keyring.destroy(key_id, session=session)
    return parts


def _delete_objects(vault: Vault, parts: _Parts) -> None:
    """Step 2: remove every object of the study (a missing one is no error)."""
    for object_key in parts.object_keys:
        vault.store.delete(object_key)


def _delete_rows(session: Session, study_id: str) -> None:
    copies = select(PseudonymisedInstance.id).select_from(_pseudo_instances(study_id).subquery())
    session.execute(delete(PseudonymisedInstance).where(PseudonymisedInstance.id.in_(copies)))
    session.execute(delete(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id))
    session.execute(delete(Instance).where(Instance.study_id == study_id))
    session.execute(delete(Series).where(Series.study_id == study_id))
    session.execute(delete(Study).where(Study.id == study_id))


def _bury(vault: Vault, parts: _Parts, now: datetime) -> None:
    """Step 3: delete the catalog rows, leave the tombstone, record the expiry."""
    with vault.catalog.session() as session:
        _delete_rows(session, parts.study_id)
        session.add(
            Tombstone(
                study_id=parts.study_id,
                organisation_id=parts.organisation_id,
                instance_count=parts.instance_count,
                received_at=parts.received_at,
                expired_at=now,
                reason=EXPIRED,
            )
        )
        detail = {
            "instances": parts.instance_count,
            "objects": len(parts.object_keys),
            "keys_destroyed": len(parts.key_ids),
        }
        record = AuditRecord(
            "system", "study.expire", object_type="study", object_id=parts.study_id, detail=detail
        )
        vault.audit.record(record, session=session)


def _expire_one(vault: Vault, study_id: str) -> bool:
    """Erase study ``study_id`` now (steps 1 to 3); ``False`` if gone or held.

    Raises:
        StorageUnavailable: the store could not delete an object; the keys
            are destroyed already, and running again completes the erasure.
    """
    parts = _shred_keys(vault, study_id)
    if parts is None:
        return False
    _delete_objects(vault, parts)
    _bury(vault, parts, vault.clock.now())
    return True


def expire_studies(vault: Vault) -> list[str]:
    """Erase every study whose retention has ended and that no hold covers.

    Returns:
        The internal ids of the studies erased by this run. A study whose
        objects could not be deleted (store unavailable) is left for the next
        run, its keys already destroyed.
    """
    expired: list[str] = []
    for study_id in _due(vault, vault.clock.now()):
        try:
            if _expire_one(vault, study_id):
                expired.append(study_id)
        except StorageUnavailable:
            log.warning("study %s: keys destroyed, objects left for the next run", study_id)
    return expired
