"""Retention by crypto-shredding: a study is erased when its time is up, or on request.

Each study expires ``organisation.retention_days`` after it was received
(``Study.expires_at``, set at ingest). :func:`expire_studies` erases every
expired study that no active legal hold covers; :func:`erase_study` erases one
study now (a data-subject erasure, an administrator's decision). Both shred a
study the same way, each step safe to repeat if a run stopped half-way:

1. in one catalog transaction: destroy its data keys (the study's, any other
   key of its instances, and its pseudonymised copy's), queue its objects and
   key envelopes for deletion, delete its catalog rows, leave a PHI-free
   :class:`Tombstone` (internal id, dates, reason) and record ``study.expire``
   or ``study.erase``: from then on the catalog cannot open its objects;
2. seal the key periods again (:meth:`vault.keyring.Keyring.seal_periods`):
   the period generations that sealed its keys are replaced and destroyed, so
   no copy of its wrapped keys, in the store or in any catalog backup, opens;
3. delete the queued objects (:func:`drain_deletions`); under S3 Object Lock
   governance is bypassed where the retention is still in force, and each
   bypass is recorded (``store.bypass-governance``). A store that is down
   leaves the queue for the next run.

The daily run (:func:`expire_studies`) also finishes steps 2 and 3 for any
earlier run that stopped, and re-applies S3 legal holds (:mod:`vault.object_lock`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, or_, select
from sqlalchemy.orm import Session

from crypto.errors import KeyProviderError
from vault.audit import AuditRecord
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.key_periods import DATA_NAMESPACE, ENVELOPE_NAMESPACE, PendingDeletion
from vault.catalog.models import Instance, Organisation, Series, Study
from vault.catalog.retention import Tombstone
from vault.core import Vault
from vault.errors import InvalidInput, NotFound, StorageUnavailable, UnderLegalHold
from vault.holds import REASON_CODE, under_hold
from vault.key_envelopes import delete_envelope
from vault.object_lock import BYPASSED, delete_data_object, sync_legal_holds

EXPIRED = "expired"
ERASED = "erased"

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


def _delete_rows(session: Session, study_id: str) -> None:
    copies = select(PseudonymisedInstance.id).select_from(_pseudo_instances(study_id).subquery())
    session.execute(delete(PseudonymisedInstance).where(PseudonymisedInstance.id.in_(copies)))
    session.execute(delete(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id))
    session.execute(delete(Instance).where(Instance.study_id == study_id))
    session.execute(delete(Series).where(Series.study_id == study_id))
    session.execute(delete(Study).where(Study.id == study_id))


def _destroy_and_queue(vault: Vault, session: Session, parts: _Parts) -> None:
    """Destroy the study's keys and queue its objects, in the caller's transaction."""
    vault.keyring.destroy_all(parts.key_ids, session=session)
    for object_key in parts.object_keys:
        session.add(
            PendingDeletion(
                namespace=DATA_NAMESPACE,
                object_key=object_key,
                study_id=parts.study_id,
                bypass_retention=True,
                queued_at=vault.clock.now(),
            )
        )


def _shred(
    vault: Vault, study_id: str, *, actor: str, reason: str, remote: str | None = None
) -> Tombstone | None:
    """Step 1 for one unheld study (keys, queue, rows, tombstone, record); None if gone or held."""
    now = vault.clock.now()
    with vault.catalog.session() as session:
        study = session.scalar(select(Study).where(Study.id == study_id, ~under_hold()))
        if study is None:
            return None
        parts = _parts(session, study)
        _destroy_and_queue(vault, session, parts)
        _delete_rows(session, study_id)
        tombstone = Tombstone(
            study_id=study_id,
            organisation_id=parts.organisation_id,
            instance_count=parts.instance_count,
            received_at=parts.received_at,
            expired_at=now,
            reason=reason,
        )
        session.add(tombstone)
        detail = {
            "instances": parts.instance_count,
            "objects": len(parts.object_keys),
            "keys_destroyed": len(parts.key_ids),
            "reason": reason,
        }
        action = "study.expire" if reason == EXPIRED else "study.erase"
        record = AuditRecord(
            actor, action, object_type="study", object_id=study_id, remote=remote, detail=detail
        )
        vault.audit.record(record, session=session)
    return tombstone


def _finish(vault: Vault, *, actor: str) -> None:
    """Steps 2 and 3: seal the key periods, delete what is queued. Failures wait for a rerun."""
    try:
        vault.keyring.seal_periods()
    except (KeyProviderError, StorageUnavailable) as exc:
        log.warning("key periods not sealed yet (%s); the daily run retries", exc.reason)
    drain_deletions(vault, actor=actor)


def drain_deletions(vault: Vault, *, actor: str = "system", study_id: str | None = None) -> int:
    """Delete queued objects and key envelopes (those of ``study_id`` only, if given).

    Returns:
        How many are left queued (the store refused or was unreachable).
    """
    query = select(PendingDeletion).order_by(PendingDeletion.queued_at, PendingDeletion.id)
    if study_id is not None:
        query = query.where(PendingDeletion.study_id == study_id)
    with vault.catalog.read_session() as session:
        queued = list(session.scalars(query))
    done: list[str] = []
    bypassed: Counter[str] = Counter()
    for item in queued:
        try:
            if _delete_queued(vault, item) == BYPASSED:
                bypassed[item.study_id or ""] += 1
        except StorageUnavailable:
            continue
        done.append(item.id)
    with vault.catalog.session() as session:
        session.execute(delete(PendingDeletion).where(PendingDeletion.id.in_(done)))
        for study, count in sorted(bypassed.items()):
            detail = {"objects": count, "mode": "GOVERNANCE"}
            record = AuditRecord(
                actor,
                "store.bypass-governance",
                object_type="study",
                object_id=study,
                detail=detail,
            )
            vault.audit.record(record, session=session)
    if len(done) < len(queued):
        log.warning(
            "%d objects could not be deleted yet; the daily run retries", len(queued) - len(done)
        )
    return len(queued) - len(done)


def _delete_queued(vault: Vault, item: PendingDeletion) -> str:
    if item.namespace == ENVELOPE_NAMESPACE:
        envelopes = vault.keyring.envelopes
        if envelopes is not None:
            delete_envelope(envelopes, item.object_key)
        return "deleted"
    return delete_data_object(vault, item.object_key, may_bypass=item.bypass_retention)


def expire_studies(vault: Vault, *, actor: str = "system") -> list[str]:
    """Erase every study whose retention has ended and that no hold covers.

    Also finishes the sealing and deletions an earlier run left, and
    re-applies S3 legal holds to every held study's objects. ``actor`` is
    who started the run: the daily job's ``system``, or a person's
    ``dicom-vault retention run``.

    Returns:
        The internal ids of the studies erased by this run.
    """
    _mirror_holds(vault)
    expired = [
        study_id
        for study_id in _due(vault, vault.clock.now())
        if _shred(vault, study_id, actor=actor, reason=EXPIRED) is not None
    ]
    _finish(vault, actor=actor)
    return expired


def _mirror_holds(vault: Vault) -> None:
    try:
        sync_legal_holds(vault)
    except StorageUnavailable as exc:
        log.warning("S3 legal holds not re-applied (%s)", exc.reason)


def _checked_reason(reason: str) -> str:
    if not REASON_CODE.fullmatch(reason):
        raise InvalidInput(
            "an erasure reason is a code of 1 to 40 letters, digits, dots, dashes or underscores",
            reason="invalid-reason-code",
        )
    return reason


def _refuse_if_held(vault: Vault, study_id: str) -> None:
    with vault.catalog.read_session() as session:
        if session.get(Study, study_id) is None:
            raise NotFound("no such study")
        if session.scalar(select(Study.id).where(Study.id == study_id, under_hold())):
            raise UnderLegalHold("a legal hold covers this study; it is kept until lifted")


def erase_study(
    vault: Vault,
    study_id: str,
    *,
    actor: str,
    reason: str = ERASED,
    remote: str | None = None,
) -> Tombstone:
    """Crypto-shred study ``study_id`` now, before its expiry (erasure).

    The one entry point for erasing a single study (data-subject erasure, an
    administrator's decision), in the three steps of the module docstring:
    its keys destroyed and its period generations replaced, so that no copy
    of its objects, in the store or in any catalog backup, can be decrypted;
    its objects (originals and pseudonymised copies) and key envelopes
    deleted; a PHI-free :class:`Tombstone` with reason ``reason`` left; the
    access log records ``study.erase`` by ``actor`` from ``remote``. Objects the store
    cannot delete now stay queued for the daily run.

    Raises:
        NotFound: no such study (or it was erased already).
        UnderLegalHold: an active legal hold covers the study or its case;
            nothing was changed.
        InvalidInput: ``reason`` is not a short code.
    """
    reason = _checked_reason(reason)
    _refuse_if_held(vault, study_id)
    tombstone = _shred(vault, study_id, actor=actor, reason=reason, remote=remote)
    if tombstone is None:
        _refuse_if_held(vault, study_id)
        raise NotFound("no such study")
    _finish(vault, actor=actor)
    return tombstone
