"""The one ingest pipeline that every entry point calls.

An entry point (upload API, C-STORE receiver, CLI) adapts its transport to a
readable stream and an :class:`IngestOrigin`, and calls
:meth:`IngestPipeline.ingest`. The pipeline:

1. reads the header from the front of the stream (no pixel data), and
   validates it against the policy;
2. finds the study (same organisation, same Study Instance UID digest) or
   prepares a new one with a fresh data key;
3. if the instance is already stored, hashes the stream and answers
   "duplicate" (same bytes) or refuses a conflicting resend (other bytes);
4. otherwise encrypts the stream into the object store while hashing the
   plaintext, refuses a file truncated in its pixels before committing, and
   records study, series, instance and data key in one catalog transaction;
5. records the outcome in the access log.

A refusal raises a :class:`vault.errors.VaultError`; by then the object
writer has aborted and nothing of the file remains in the store or catalog.
Plaintext exists only in memory buffers of bounded size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from crypto.errors import CryptoError
from dicom_ingest._catalog import (
    NewInstance,
    StoredInstance,
    StudyLookup,
    find_study,
    record_instance,
    refuse_if_conflicting,
)
from dicom_ingest.header import read_header
from dicom_ingest.validation import InstanceFacts, ValidationPolicy, validate
from vault.audit import AuditRecord
from vault.core import Vault
from vault.errors import (
    PolicyRefused,
    StorageUnavailable,
    VaultError,
)
from vault.keyring import PendingKey
from vault.objects import hash_stream, write_encrypted


@dataclass(frozen=True)
class IngestOrigin:
    """Who is sending, through which entry point, for which case."""

    channel: str  # "upload", "cstore", "cli"
    actor: str  # "user:<id>", "pacs:<id>", "cli"
    organisation_id: str
    case_id: str | None
    remote: str | None = None


@dataclass(frozen=True)
class IngestResult:
    instance_id: str
    study_id: str
    series_id: str
    sha256: str
    size: int
    duplicate: bool


StudyListener = Callable[[str], None]


class IngestPipeline:
    """Validates, encrypts, stores and catalogues instances."""

    def __init__(
        self,
        vault: Vault,
        policy: ValidationPolicy,
        *,
        on_study_updated: StudyListener | None = None,
    ) -> None:
        self._vault = vault
        self._policy = policy
        self._limits = vault.settings.limits
        self._on_study_updated = on_study_updated

    def ingest(self, source: BinaryIO, origin: IngestOrigin) -> IngestResult:
        """Store one Part 10 instance read from ``source``.

        Raises:
            VaultError: the instance was refused; nothing of it was stored.
        """
        try:
            result = self._ingest(source, origin)
        except (VaultError, CryptoError) as exc:
            self._audit_refusal(origin, exc)
            raise
        if result.duplicate:
            self._audit_stored(origin, result)
        if self._on_study_updated is not None:
            self._on_study_updated(result.study_id)
        return result

    def _ingest(self, source: BinaryIO, origin: IngestOrigin) -> IngestResult:
        header, prefix = read_header(source, max_header_bytes=self._limits.max_header_bytes)
        facts = validate(header, self._policy)
        lookup = self._lookup(facts, origin)
        if lookup.existing is not None:
            return self._compare_resend(source, prefix, lookup.existing)
        pending = None if lookup.study_key_id else self._vault.keyring.generate()
        key = pending.key if pending else self._vault.keyring.data_key(lookup.study_key_id or "")
        completeness = header.completeness_check()
        stored = write_encrypted(
            self._vault.store,
            key,
            source,
            limit=self._limits.max_file_bytes,
            prefix=prefix,
            observers=(completeness.feed,),
            before_commit=completeness.finish,
        )
        new = NewInstance(facts, stored.sha256, stored.size, stored.object_key, key.key_id)
        return self._record(new, lookup, origin, pending)

    def _lookup(self, facts: InstanceFacts, origin: IngestOrigin) -> StudyLookup:
        index = self._vault.index
        with self._vault.catalog.read_session() as session:
            lookup = find_study(session, index, facts, origin.organisation_id, origin.case_id)
        if lookup.case_id is not None and lookup.case_id != origin.case_id and origin.case_id:
            raise PolicyRefused("this study is already filed under another case")
        if self._vault.settings.policy.one_patient_per_case and lookup.other_patient_in_case:
            raise PolicyRefused("this case already holds a study of another patient")
        return lookup

    def _compare_resend(
        self, source: BinaryIO, prefix: bytes, existing: StoredInstance
    ) -> IngestResult:
        digest, _size = hash_stream(source, prefix=prefix, limit=self._limits.max_file_bytes)
        refuse_if_conflicting(existing.sha256, digest)
        return existing.as_result(duplicate=True)

    def _record(
        self,
        new: NewInstance,
        lookup: StudyLookup,
        origin: IngestOrigin,
        pending: PendingKey | None,
    ) -> IngestResult:
        """Catalogue ``new``; on any failure, or if it turns out a duplicate, drop its object."""
        try:
            stored, duplicate = self._record_with_retry(new, lookup, origin, pending)
        except BaseException:
            self._vault.store.delete(new.object_key)
            raise
        if duplicate:
            self._vault.store.delete(new.object_key)
        return stored.as_result(duplicate=duplicate)

    def _record_with_retry(
        self,
        new: NewInstance,
        lookup: StudyLookup,
        origin: IngestOrigin,
        pending: PendingKey | None,
    ) -> tuple[StoredInstance, bool]:
        """One transaction, retried when a concurrent sender created the same row first."""
        retention = timedelta(days=lookup.retention_days)
        last_error: sa_exc.IntegrityError | None = None
        for _attempt in range(3):
            try:
                with self._vault.catalog.session() as session:
                    stored, duplicate = record_instance(
                        session, self._vault, new, origin, pending, retention
                    )
                    if not duplicate:
                        self._audit_stored(origin, stored.as_result(duplicate=False), session)
                    return stored, duplicate
            except sa_exc.IntegrityError as exc:
                last_error = exc
        raise StorageUnavailable("the catalog could not record the instance") from last_error

    def _audit_stored(
        self, origin: IngestOrigin, result: IngestResult, session: Session | None = None
    ) -> None:
        """Record a store; a new instance is recorded in its own catalog transaction."""
        self._vault.audit.record(
            AuditRecord(
                actor=origin.actor,
                action="instance.store",
                outcome="duplicate" if result.duplicate else "success",
                object_type="instance",
                object_id=result.instance_id,
                remote=origin.remote,
                detail={"channel": origin.channel, "study": result.study_id, "bytes": result.size},
            ),
            session=session,
        )

    def _audit_refusal(self, origin: IngestOrigin, exc: VaultError | CryptoError) -> None:
        self._vault.audit.record(
            AuditRecord(
                actor=origin.actor,
                action="instance.store",
                outcome=f"refused:{exc.reason}",
                object_type="case" if origin.case_id else "organisation",
                object_id=origin.case_id or origin.organisation_id,
                remote=origin.remote,
                detail={"channel": origin.channel},
            )
        )
