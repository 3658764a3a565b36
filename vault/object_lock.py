"""S3 Object Lock: legal holds mirrored onto objects, deletions that respect the lock.

Where the data store is an S3 bucket with Object Lock (``store.s3.object_lock``),
every data object is written with a GOVERNANCE retention (see
:mod:`vault.store.s3`), so that nobody holding only the store's credentials
deletes it before its time. This module adds the rest:

* :func:`mirror_hold` places or lifts an S3 legal hold on every object of
  some studies (originals and pseudonymised copies): called when a legal hold
  is placed or lifted (:mod:`vault.holds`), and by :func:`sync_legal_holds`
  daily, which also covers objects written into a held study since;
* :func:`delete_data_object` deletes an object for good (every version): first
  without bypassing governance; if the retention is still in force (an
  erasure before expiry, or an object written after its study began), with
  the bypass, reported so the caller records it. A legal hold is never
  bypassed: the deletion is refused and left for a later run.

On any other store these functions do what the store can: a plain delete,
and nothing for holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.errors import StorageUnavailable
from vault.store import ObjectStore
from vault.store.s3 import S3ObjectStore

log = logging.getLogger(__name__)

DELETED, BYPASSED = "deleted", "bypassed"


def locking_store(store: ObjectStore) -> S3ObjectStore | None:
    """``store`` if it writes data objects under Object Lock, else None."""
    if isinstance(store, S3ObjectStore) and store.lock_days is not None:
        return store
    return None


def study_object_keys(session: Session, study_id: str) -> list[str]:
    """Every object of study ``study_id``: its originals and its pseudonymised copies."""
    originals = list(
        session.scalars(select(Instance.object_key).where(Instance.study_id == study_id))
    )
    copies = session.scalars(
        select(PseudonymisedInstance.object_key).where(
            or_(
                PseudonymisedInstance.pseudo_study_id.in_(
                    select(PseudonymisedStudy.id).where(PseudonymisedStudy.study_id == study_id)
                ),
                PseudonymisedInstance.source_instance_id.in_(
                    select(Instance.id).where(Instance.study_id == study_id)
                ),
            )
        )
    )
    return originals + [key for key in copies if key is not None]


def mirror_hold(vault: Vault, study_ids: Iterable[str], *, on: bool) -> int:
    """Place (``on``) or lift the S3 legal hold on every object of these studies.

    Returns:
        How many objects were changed (0 on a store without Object Lock).

    Raises:
        StorageUnavailable: the store refused or could not be reached.
    """
    store = locking_store(vault.store)
    if store is None:
        return 0
    with vault.catalog.read_session() as session:
        keys = [key for study_id in study_ids for key in study_object_keys(session, study_id)]
    for key in keys:
        store.set_legal_hold(key, on)
    return len(keys)


def sync_legal_holds(vault: Vault) -> int:
    """Place the S3 legal hold on every object of every held study; how many objects.

    Idempotent; run daily, so that objects written into a held study after
    the hold was placed (more instances, a pseudonymised copy) are held too.
    """
    from vault.holds import under_hold

    if locking_store(vault.store) is None:
        return 0
    with vault.catalog.read_session() as session:
        held = list(session.scalars(select(Study.id).where(under_hold())))
    return mirror_hold(vault, held, on=True)


def delete_data_object(vault: Vault, object_key: str, *, may_bypass: bool) -> str:
    """Delete data object ``object_key`` for good; ``"deleted"`` or ``"bypassed"``.

    Raises:
        StorageUnavailable: the store refused (a legal hold, or a retention in
            force that may not be bypassed) or could not be reached.
    """
    store = locking_store(vault.store)
    if store is None:
        vault.store.delete(object_key)
        return DELETED
    try:
        store.purge(object_key)
        return DELETED
    except StorageUnavailable:
        if not may_bypass:
            raise
    # S3 never lets a bypass through a legal hold: a held object stays.
    store.purge(object_key, bypass_governance=True)
    return BYPASSED
