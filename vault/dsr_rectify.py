"""Rectification (GDPR article 16): correct patient attributes in a person's stored studies.

For each study matched to a rectification request, :func:`rectify` reads every
original through the one decrypting reader, sets the corrected attributes
(top-level patient module only: name, birth date, sex, patient id, issuer;
UIDs, pixels and everything else unchanged), checks the result with the
ingest header reader and validation policy, and writes it with
:func:`vault.objects.write_encrypted` under a fresh data key for the study.
Then, in one catalog transaction, the instances point at their corrected
objects, the study's patient digest follows a corrected patient id, and the
old data keys are destroyed (and their key periods sealed again): the
original objects no longer exist in readable form anywhere, old catalog
backups included. The old objects are deleted
afterwards.

The pseudonymised copy was made from the old originals, so it is discarded
the same way (key destroyed, objects and rows deleted) and made again from
the corrected study by the de-identification task. The attributes changed
(their keywords, never their values) are recorded on the request and in the
access log.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pydicom
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from crypto.keys import DataKey
from dicom_ingest.header import read_header
from dicom_ingest.validation import InstanceFacts, ValidationPolicy, validate
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.dsr import load, matched_study_ids, record_step, require_open, require_verified
from vault.errors import InvalidInput, NotReady
from vault.issuers import patient_key
from vault.keyring import PendingKey
from vault.objects import StoredObject, write_encrypted
from vault.reader import open_instance

_CHECKS: dict[str, tuple[re.Pattern[str], str]] = {
    "PatientName": (re.compile(r"[^\\\r\n]{0,200}"), "a name of at most 200 characters"),
    "PatientBirthDate": (re.compile(r"(\d{8})?"), "a date as YYYYMMDD"),
    "PatientSex": (re.compile(r"(M|F|O)?"), "M, F or O"),
    "PatientID": (re.compile(r"[^\\\r\n]{1,64}"), "1 to 64 characters"),
    "IssuerOfPatientID": (re.compile(r"[^\\\r\n]{0,64}"), "at most 64 characters"),
}
RECTIFIABLE = tuple(_CHECKS)

Redo = Callable[[str], None]


def checked_changes(changes: Mapping[str, str]) -> dict[str, str]:
    """The corrections, validated.

    Raises:
        InvalidInput: no change, an attribute outside :data:`RECTIFIABLE`, or a bad value.
    """
    if not changes:
        raise InvalidInput("name at least one attribute to correct", reason="no-changes")
    checked = {}
    for keyword, value in changes.items():
        if keyword not in _CHECKS:
            raise InvalidInput(
                f"only these attributes are rectified here: {', '.join(RECTIFIABLE)}",
                reason="attribute",
            )
        pattern, expected = _CHECKS[keyword]
        value = value.strip().replace("-", "") if keyword == "PatientBirthDate" else value.strip()
        if not pattern.fullmatch(value):
            raise InvalidInput(f"{keyword} must be {expected}", reason="value")
        checked[keyword] = value
    return checked


def corrected_bytes(original: bytes, changes: Mapping[str, str]) -> bytes:
    """The Part 10 file ``original`` with ``changes`` applied to its top-level attributes.

    Raises:
        InvalidInput: a value cannot be written in the file's character set.
    """
    dataset = pydicom.dcmread(io.BytesIO(original), force=False)
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    out = io.BytesIO()
    try:
        dataset.save_as(out, enforce_file_format=True)
    except (UnicodeError, LookupError) as exc:
        raise InvalidInput("a value cannot be written in the file's character set") from exc
    return out.getvalue()


@dataclass(frozen=True)
class _Corrected:
    instance_id: str
    stored: StoredObject
    facts: InstanceFacts


class _StudyRectifier:
    """Rewrites one study under a new key; see the module docstring."""

    def __init__(
        self,
        vault: Vault,
        changes: Mapping[str, str],
        ref: str,
        actor: str,
        remote: str | None = None,
    ) -> None:
        self._vault = vault
        self._changes = changes
        self._ref, self._actor, self._remote = ref, actor, remote
        self._policy = ValidationPolicy.from_settings(vault.settings.policy)
        self._limit = vault.settings.limits.max_file_bytes

    def run(self, study_id: str) -> tuple[int, list[str]]:
        """Rectify ``study_id``; (instances rewritten, object keys now garbage)."""
        with self._vault.catalog.read_session() as session:
            instance_ids = _instance_ids(session, study_id)
        pending = self._vault.keyring.generate()
        written: list[_Corrected] = []
        try:
            for instance_id in instance_ids:
                written.append(self._rewrite(instance_id, pending.key))
            garbage = self._commit(study_id, pending, written)
        except BaseException:
            for item in written:
                self._vault.store.delete(item.stored.object_key)
            raise
        return len(written), garbage

    def _rewrite(self, instance_id: str, key: DataKey) -> _Corrected:
        with open_instance(self._vault, instance_id) as source:
            data = corrected_bytes(source.read(), self._changes)
        header, _ = read_header(io.BytesIO(data), max_header_bytes=len(data) + 1)
        facts = validate(header, self._policy)
        stored = write_encrypted(
            self._vault.store, key, io.BytesIO(), prefix=data, limit=self._limit
        )
        return _Corrected(instance_id, stored, facts)

    def _commit(self, study_id: str, pending: PendingKey, written: list[_Corrected]) -> list[str]:
        vault = self._vault
        with vault.catalog.session() as session:
            study = session.get(Study, study_id)
            if study is None or _instance_ids(session, study_id) != [
                w.instance_id for w in written
            ]:
                raise NotReady("the study changed while it was being rectified; try again")
            vault.keyring.persist(session, pending)
            session.flush()
            old_keys, garbage = {study.data_key_id}, []
            for item in written:
                row = session.get(Instance, item.instance_id)
                old_keys.add(row.key_id)
                garbage.append(row.object_key)
                row.object_key, row.key_id = item.stored.object_key, pending.key.key_id
                row.sha256, row.size = item.stored.sha256, item.stored.size
            study.data_key_id = pending.key.key_id
            study.total_bytes = sum(item.stored.size for item in written)
            if written:
                study.patient_digest = _patient_digest(vault, session, study, written[0].facts)
            garbage += _discard_copy(vault, session, study_id, old_keys)
            for key_id in sorted(k for k in old_keys if k):
                vault.keyring.destroy(key_id, session=session)
            self._record(session, study, len(written))
        return garbage

    def _record(self, session: Session, study: Study, count: int) -> None:
        """The step on the request (whose digests follow a corrected patient id)."""
        request = load(session, self._ref)
        digests = set(json.loads(request.subject_digests))
        if study.patient_digest:
            request.subject_digests = json.dumps(sorted(digests | {study.patient_digest}))
        detail = {"attributes": ",".join(sorted(self._changes)), "instances": count}
        record_step(
            self._vault,
            session,
            request,
            self._actor,
            "rectify",
            study_id=study.id,
            detail=detail,
            remote=self._remote,
        )


def _patient_digest(vault: Vault, session: Session, study: Study, facts: InstanceFacts) -> str:
    """The corrected study's patient digest, as ingest makes it (an own issuer as none)."""
    key = patient_key(
        session.connection(), study.organisation_id, facts.patient_id, facts.issuer_of_patient_id
    )
    return vault.index.digest("patient", key)


def _instance_ids(session: Session, study_id: str) -> list[str]:
    query = select(Instance.id).where(Instance.study_id == study_id).order_by(Instance.id)
    return list(session.scalars(query))


def _discard_copy(vault: Vault, session: Session, study_id: str, old_keys: set[str]) -> list[str]:
    """Drop the pseudonymised copy's rows; add its keys to ``old_keys``; its object keys."""
    copy = session.scalar(select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id))
    if copy is None:
        return []
    rows = list(
        session.scalars(
            select(PseudonymisedInstance).where(PseudonymisedInstance.pseudo_study_id == copy.id)
        )
    )
    old_keys.update(k for k in [copy.data_key_id, *(r.key_id for r in rows)] if k)
    session.execute(
        delete(PseudonymisedInstance).where(PseudonymisedInstance.pseudo_study_id == copy.id)
    )
    session.delete(copy)
    return [r.object_key for r in rows if r.object_key]


def redo_pseudonymised_copy(vault: Vault) -> Redo:
    """The default way to make a study's pseudonymised copy again: the Celery task
    (in-process on the embedded default, on a worker when a broker is set)."""

    def redo(study_id: str) -> None:
        from deidentify.pipeline import queue_study
        from deidentify.tasks import create_celery_app

        queue_study(vault, study_id)
        create_celery_app(vault.settings, vault=vault).deidentify_study.delay(study_id)

    return redo


def rectify(
    vault: Vault,
    ref: str,
    changes: Mapping[str, str],
    *,
    actor: str,
    remote: str | None = None,
    redo: Redo | None = None,
) -> list[str]:
    """Apply ``changes`` to every study matched to request ``ref``; the studies rectified.

    Raises:
        NotFound: no such request.
        RequestNotOpen: closed, or not a rectification request.
        IdentityNotVerified: the requester was not verified yet.
        InvalidInput: bad changes, or no stored study matched.
        NotReady: a study received new instances meanwhile (nothing changed).
    """
    changes = checked_changes(changes)
    with vault.catalog.read_session() as session:
        request = load(session, ref)
        require_open(request, "rectify")
        require_verified(request)
        study_ids = matched_study_ids(session, request.id)
        study_ids = [s for s in study_ids if session.get(Study, s) is not None]
        copies = set(
            session.scalars(
                select(PseudonymisedStudy.study_id).where(
                    PseudonymisedStudy.study_id.in_(study_ids)
                )
            )
        )
    if not study_ids:
        raise InvalidInput("no stored study is matched to this request", reason="no-studies")
    redo = redo or redo_pseudonymised_copy(vault)
    for study_id in study_ids:
        _count, garbage = _StudyRectifier(vault, changes, ref, actor, remote).run(study_id)
        for object_key in garbage:
            vault.store.delete(object_key)
        if study_id in copies:
            redo(study_id)
    vault.keyring.seal_periods()  # old catalog backups lose the replaced keys too
    return study_ids
