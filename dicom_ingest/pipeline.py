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
5. records the outcome in the access log (a stored instance's record in the
   same transaction as its catalog rows).

Per instance this costs one catalog read (study, data key liveness and
resend check in a single statement) and one shared write transaction
(:mod:`dicom_ingest._group_commit`); unwrapped data keys and series ids are
cached per pipeline, and the read re-checks on every instance that the
study's key has not been destroyed since.

A refusal raises a :class:`vault.errors.VaultError`; by then the object
writer has aborted and nothing of the file remains in the store or catalog.
Plaintext exists only in memory buffers of bounded size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from threading import Lock
from typing import BinaryIO

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from crypto.errors import CryptoError
from crypto.keys import DataKey
from dicom_ingest._catalog import (
    NewInstance,
    StoredInstance,
    StudyLookup,
    find_study,
    refuse_if_conflicting,
)
from dicom_ingest._catalog_write import SeriesCache, WriteContext, record_instance
from dicom_ingest._group_commit import GroupCommitter
from dicom_ingest.header import InstanceHeader, read_header
from dicom_ingest.resend import COMPARE_LIMIT_BYTES, same_instance
from dicom_ingest.validation import InstanceFacts, ValidationPolicy, validate
from vault.audit import AuditRecord
from vault.core import Vault
from vault.errors import (
    PolicyRefused,
    SopClassMismatch,
    StorageUnavailable,
    VaultError,
)
from vault.keyring import PendingKey
from vault.objects import hash_stream, write_encrypted
from vault.reader import open_instance

_ATTEMPTS = 3


@dataclass(frozen=True)
class IngestOrigin:
    """Who is sending, through which entry point, for which case.

    ``declared_sop_class``: the SOP Class the transport announced for the
    instance (a C-STORE's Affected SOP Class UID); a data set of another
    class is refused as not matching it.
    """

    channel: str  # "upload", "cstore", "cli"
    actor: str  # "user:<id>", "pacs:<id>", "cli:<account>"
    organisation_id: str
    case_id: str | None
    remote: str | None = None
    declared_sop_class: str | None = None


@dataclass(frozen=True)
class IngestResult:
    instance_id: str
    study_id: str
    series_id: str
    sha256: str
    size: int
    duplicate: bool


StudyListener = Callable[[str], None]
CatalogHook = Callable[[Connection, IngestResult], None]
"""An entry point's own catalog writes for an instance (an upload file's outcome),
made in the transaction that records the instance."""


class _DataKeys:
    """Unwrapped study keys of this pipeline, by key id (bounded LRU).

    Only consulted after the catalog read confirmed that the key is alive.
    """

    def __init__(self, vault: Vault, size: int = 256) -> None:
        self._vault = vault
        self._keys: OrderedDict[str, DataKey] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def get(self, key_id: str, *, destroyed: bool) -> DataKey:
        """The key; raises KeyDestroyedError (through the keyring) if destroyed."""
        with self._lock:
            key = None if destroyed else self._keys.get(key_id)
            if destroyed:
                self._keys.pop(key_id, None)
        if key is None:
            key = self._vault.keyring.data_key(key_id)
            with self._lock:
                self._keys[key_id] = key
                while len(self._keys) > self._size:
                    self._keys.popitem(last=False)
        return key


class _Held:
    """The bytes of a resend, kept in memory while they are hashed, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] | None = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        if self._chunks is None:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._chunks = None  # too large to compare: given up, not held
        else:
            self._chunks.append(bytes(chunk))

    def whole(self) -> bytes | None:
        return None if self._chunks is None else b"".join(self._chunks)


class IngestPipeline:
    """Validates, encrypts, stores and catalogues instances (thread-safe)."""

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
        self._keys = _DataKeys(vault)
        self._series = SeriesCache()
        self._writer = GroupCommitter(vault.catalog.engine)
        self._reader = vault.catalog.engine.execution_options(catalog_readonly=True)

    def ingest(
        self, source: BinaryIO, origin: IngestOrigin, *, also: CatalogHook | None = None
    ) -> IngestResult:
        """Store one Part 10 instance read from ``source``.

        Parameters:
            also: the entry point's own catalog writes for this instance, run
                once in the transaction that records it (with its access-log
                record), so that one commit makes both durable; not run when
                the instance is refused.

        Raises:
            VaultError: the instance was refused; nothing of it was stored.
        """
        try:
            result = self._ingest(source, origin, also)
        except (VaultError, CryptoError) as exc:
            self._audit_refusal(origin, exc)
            raise
        if result.duplicate:
            self._writer.run(partial(self._record_duplicate, origin, result, also))
        if self._on_study_updated is not None:
            self._on_study_updated(result.study_id)
        return result

    def _ingest(
        self, source: BinaryIO, origin: IngestOrigin, also: CatalogHook | None
    ) -> IngestResult:
        header, prefix = read_header(source, max_header_bytes=self._limits.max_header_bytes)
        _check_declared_class(header, origin)
        facts = validate(header, self._policy)
        lookup = self._lookup(facts, origin)
        if lookup.existing is not None:
            return self._compare_resend(source, prefix, lookup.existing)
        pending = None if lookup.study_key_id else self._vault.keyring.generate()
        key = (
            pending.key
            if pending
            else self._keys.get(lookup.study_key_id or "", destroyed=lookup.key_destroyed)
        )
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
        return self._record(new, lookup, origin, pending, also)

    def _lookup(self, facts: InstanceFacts, origin: IngestOrigin) -> StudyLookup:
        index = self._vault.index
        with self._reader.connect() as connection, connection.begin():
            lookup = find_study(connection, index, facts, origin.organisation_id, origin.case_id)
        if lookup.case_id is not None and lookup.case_id != origin.case_id and origin.case_id:
            raise PolicyRefused("this study is already filed under another case")
        if self._vault.settings.policy.one_patient_per_case and lookup.other_patient_in_case:
            raise PolicyRefused("this case already holds a study of another patient")
        return lookup

    def _compare_resend(
        self, source: BinaryIO, prefix: bytes, existing: StoredInstance
    ) -> IngestResult:
        """A duplicate if the resend is the stored instance (:mod:`dicom_ingest.resend`).

        Raises:
            ConflictingResend: it is another instance under the same SOP Instance UID.
        """
        held = _Held(COMPARE_LIMIT_BYTES)
        limit = self._limits.max_file_bytes
        digest, _size = hash_stream(source, prefix=prefix, limit=limit, observers=(held.feed,))
        if digest != existing.sha256 and not self._same_as_stored(existing, held):
            refuse_if_conflicting(existing.sha256, digest)
        return existing.as_result(duplicate=True)

    def _same_as_stored(self, existing: StoredInstance, held: _Held) -> bool:
        received = held.whole()
        if received is None or existing.size > COMPARE_LIMIT_BYTES:
            return False
        with open_instance(self._vault, existing.instance_id) as stored:
            return same_instance(stored.read(), received)

    def _record(
        self,
        new: NewInstance,
        lookup: StudyLookup,
        origin: IngestOrigin,
        pending: PendingKey | None,
        also: CatalogHook | None,
    ) -> IngestResult:
        """Catalogue ``new``; on any failure, or if it turns out a duplicate, drop its object."""
        try:
            stored, duplicate = self._record_with_retry(new, lookup, origin, pending, also)
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
        also: CatalogHook | None,
    ) -> tuple[StoredInstance, bool]:
        """One write, retried (carefully) when a concurrent sender created the same row first."""
        last_error: sa_exc.IntegrityError | None = None
        for attempt in range(_ATTEMPTS):
            ctx = WriteContext(self._vault, origin, lookup, pending, self._series, attempt > 0)
            try:
                return self._writer.run(partial(self._write, ctx, new, also))
            except sa_exc.IntegrityError as exc:
                last_error = exc
        raise StorageUnavailable("the catalog could not record the instance") from last_error

    def _write(
        self,
        ctx: WriteContext,
        new: NewInstance,
        also: CatalogHook | None,
        connection: Connection,
    ) -> tuple[StoredInstance, bool]:
        """The catalog rows of ``new`` and, if new, its access-log record and ``also``."""
        stored, duplicate = record_instance(connection, ctx, new)
        if not duplicate:
            self._vault.audit.append(connection, _stored_record(ctx.origin, stored, False))
            if also is not None:
                also(connection, stored.as_result(duplicate=False))
        return stored, duplicate

    def _record_duplicate(
        self,
        origin: IngestOrigin,
        result: IngestResult,
        also: CatalogHook | None,
        connection: Connection,
    ) -> None:
        """Record a resend answered as a duplicate, and ``also``, in one transaction."""
        stored = StoredInstance(
            result.instance_id, result.study_id, result.series_id, result.sha256, result.size
        )
        self._vault.audit.append(connection, _stored_record(origin, stored, result.duplicate))
        if also is not None:
            also(connection, result)

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


def _stored_record(origin: IngestOrigin, stored: StoredInstance, duplicate: bool) -> AuditRecord:
    return AuditRecord(
        actor=origin.actor,
        action="instance.store",
        outcome="duplicate" if duplicate else "success",
        object_type="instance",
        object_id=stored.instance_id,
        remote=origin.remote,
        detail={"channel": origin.channel, "study": stored.study_id, "bytes": stored.size},
    )


def _check_declared_class(header: InstanceHeader, origin: IngestOrigin) -> None:
    """Refuse a data set whose SOP Class is not the one its transport declared.

    An absent or undecodable SOP Class UID is left to :func:`validate`.
    """
    if origin.declared_sop_class is None:
        return
    try:
        value = header.dataset.get("SOPClassUID")
        found = str(value).strip("\x00 ") if value else None
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError):
        return
    if found is not None and found != origin.declared_sop_class:
        raise SopClassMismatch("the data set is not of the SOP Class it was sent as")
