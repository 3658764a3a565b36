"""Encrypted catalog backups: taken, listed, restored, rotated after six months.

A backup is the logical dump of the catalog (:mod:`vault.catalog_dump`, one
format for SQLite and PostgreSQL) encrypted with the streaming format of
``crypto/FORMAT.md`` under a fresh backup data key, which the key provider
wraps under its current KEK. It lives in the backups side store
(:mod:`vault.side_stores`: ``vault-meta/backups/`` of the S3 bucket, or the
``<objects>-backups`` directory) as two objects::

    <backup id>/manifest.json   id, time, schema revisions, the wrapped backup key
    <backup id>/catalog.enc     the encrypted dump

The manifest's fields are bound into the encrypted dump as associated data,
so a manifest or dump changed, swapped or cut short fails the restore before
anything is written. Restoring refuses a catalog that holds data unless
forced, loads the dump in one transaction, then brings the wrapped data keys
to the present from their key envelopes (:mod:`vault.key_restore`): keys
shredded after the backup stay destroyed.

The access log never goes back in time: a restore keeps the catalog's own
log and its checkpoints (the live chain), skips the backup's copy of them,
and appends ``backup.restore`` to the live chain, pinned at once by a signed
checkpoint (:func:`vault.audit_retention.record_pinned`). The backup's records are
an earlier state of that same chain, each either still in the live log or
purged behind a signed checkpoint, so nothing is lost; loading them instead
would erase every access made since the backup. Only a catalog whose log is
empty (a restore onto a new database after losing the old one) takes the
backup's log, its only surviving copy.

Backups older than ``retention.backup_retention_days`` (183: a 6-month
rotation) are deleted by :func:`rotate_backups`, run by every backup and by
the daily job.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

from sqlalchemy import Connection, select

from crypto import new_decrypting_stream, new_encrypting_stream
from crypto.keys import DataKey, WrappedKey
from vault import catalog_dump
from vault.audit import AuditRecord
from vault.audit_retention import record_pinned
from vault.catalog.models import AuditEvent
from vault.catalog.retention import AuditCheckpoint
from vault.core import Vault
from vault.errors import CatalogNotEmpty, InvalidInput, NotFound
from vault.key_restore import RefreshReport
from vault.side_stores import BACKUPS, purge, side_store
from vault.store import ObjectStore

MANIFEST_FORMAT = "dicom-vault-catalog-backup/1"
MANIFEST, DUMP = "manifest.json", "catalog.enc"
MAX_MANIFEST_BYTES = 64 * 1024
CHUNK = 1024 * 1024
_AAD_DOMAIN = b"dicom-vault/catalog-backup/v1\x00"
ACCESS_LOG_TABLES = frozenset({AuditEvent.__tablename__, AuditCheckpoint.__tablename__})


@dataclass(frozen=True)
class BackupInfo:
    """A backup's manifest: what it is, and the wrapped key that opens it."""

    backup_id: str
    created_at: datetime
    dialect: str
    revisions: tuple[str, ...]
    key_id: str
    kek_id: str
    wrapped_key: bytes
    rows: int

    def associated_data(self) -> bytes:
        """What the encrypted dump is bound to (every field but the row count)."""
        fields = [
            self.backup_id,
            self.created_at.isoformat(),
            self.dialect,
            ",".join(self.revisions),
            self.key_id,
            self.kek_id,
            base64.b64encode(self.wrapped_key).decode("ascii"),
        ]
        return _AAD_DOMAIN + "\x00".join(fields).encode()


@dataclass(frozen=True)
class RestoreReport:
    backup_id: str
    rows: int
    keys: RefreshReport


def backups_store(vault: Vault) -> ObjectStore:
    """Where ``vault`` keeps its catalog backups."""
    return side_store(vault.store, BACKUPS)


def create_backup(vault: Vault, *, actor: str = "system") -> BackupInfo:
    """Back the catalog up now, then delete backups past their rotation.

    Raises:
        KeyProviderError: the backup key could not be wrapped.
        StorageUnavailable: the store did not take the backup (nothing is left).
    """
    store = backups_store(vault)
    now = vault.clock.now()
    key = DataKey.generate()
    wrapped = vault.keyring.provider.wrap(key)
    backup_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    with catalog_dump.snapshot(vault.catalog.engine) as connection:
        info = BackupInfo(
            backup_id=backup_id,
            created_at=now,
            dialect=connection.dialect.name,
            revisions=tuple(catalog_dump.schema_revisions(connection)),
            key_id=key.key_id,
            kek_id=wrapped.kek_id,
            wrapped_key=wrapped.blob,
            rows=0,
        )
        with (
            store.open_writer(f"{backup_id}/{DUMP}") as writer,
            new_encrypting_stream(key, writer, info.associated_data()) as encrypting,
        ):
            rows = catalog_dump.dump(connection, encrypting.write)
    info = BackupInfo(**{**asdict(info), "rows": rows})
    _write_manifest(store, info)
    detail = {"backup_id": backup_id, "rows": rows}
    vault.audit.record(AuditRecord(actor, "backup.create", object_type="backup", detail=detail))
    rotate_backups(vault, actor=actor)
    return info


def list_backups(vault: Vault) -> list[BackupInfo]:
    """Every backup whose manifest is readable, oldest first."""
    store = backups_store(vault)
    found = []
    for key in store.iter_keys():
        if key.endswith(f"/{MANIFEST}"):
            info = _read_manifest(store, key.removesuffix(f"/{MANIFEST}"))
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda info: (info.created_at, info.backup_id))


def restore_backup(
    vault: Vault, backup_id: str, *, force: bool = False, actor: str = "system"
) -> RestoreReport:
    """Replace the catalog's content with backup ``backup_id``; the access log stays live.

    The catalog's own access log and checkpoints are kept, not replaced by
    the backup's (see the module docstring), and the restore is appended to
    them.

    Raises:
        NotFound: no such backup.
        InvalidInput: the backup is of other schema revisions than this catalog.
        CatalogNotEmpty: the catalog holds data and ``force`` was not given.
        IntegrityError: the backup was changed, swapped or cut short; the
            catalog is left as it was.
        KeyDestroyedError, KeyProviderError: its backup key cannot be unwrapped.
    """
    store = backups_store(vault)
    info = _read_manifest(store, backup_id)
    if info is None:
        raise NotFound("no such backup")
    key = vault.keyring.provider.unwrap(WrappedKey(info.key_id, info.kek_id, info.wrapped_key))
    # Finish any sealing the catalog being replaced still owes: its marks die with it.
    vault.keyring.seal_periods()
    with vault.catalog.engine.begin() as connection:
        if tuple(catalog_dump.schema_revisions(connection)) != info.revisions:
            raise InvalidInput(
                "the backup is of another catalog schema version", reason="backup-schema"
            )
        if not force and not catalog_dump.is_empty(connection):
            raise CatalogNotEmpty("the catalog holds data; restore with --force to replace it")
        live_log = ACCESS_LOG_TABLES if _holds_a_log(connection) else frozenset()
        catalog_dump.clear(connection, keep=live_log)
        with store.open_reader(f"{backup_id}/{DUMP}") as ciphertext:
            lines = _lines(key, ciphertext, info)
            rows = catalog_dump.load(connection, lines, skip=live_log)
    keys = vault.keyring.refresh_after_restore()
    vault.keyring.seal_periods()
    access_log = "kept" if live_log else "from-backup"
    detail = {"backup_id": backup_id, "rows": rows, "access_log": access_log, **asdict(keys)}
    record_pinned(vault, AuditRecord(actor, "backup.restore", object_type="backup", detail=detail))
    return RestoreReport(backup_id, rows, keys)


def _holds_a_log(connection: Connection) -> bool:
    """Whether the catalog has an access log of its own (records or checkpoints)."""
    for column in (AuditEvent.seq, AuditCheckpoint.seq):
        if connection.execute(select(column).limit(1)).first() is not None:
            return True
    return False


def rotate_backups(vault: Vault, *, actor: str = "system") -> list[str]:
    """Delete every backup older than ``retention.backup_retention_days``; their ids."""
    days = vault.settings.retention.backup_retention_days
    cutoff = vault.clock.now() - timedelta(days=days)
    store = backups_store(vault)
    deleted = []
    for info in list_backups(vault):
        if info.created_at < cutoff:
            purge(store, f"{info.backup_id}/{DUMP}")
            purge(store, f"{info.backup_id}/{MANIFEST}")
            deleted.append(info.backup_id)
    if deleted:
        detail = {"deleted": len(deleted), "retention_days": days}
        vault.audit.record(AuditRecord(actor, "backup.rotate", object_type="backup", detail=detail))
    return deleted


def _lines(key: DataKey, ciphertext: BinaryIO, info: BackupInfo) -> Iterator[bytes]:
    """The dump's lines, each released only once its segment was authenticated."""
    plaintext = new_decrypting_stream(key, ciphertext, info.associated_data())
    with io.BufferedReader(plaintext, CHUNK) as lines:
        yield from lines


def _write_manifest(store: ObjectStore, info: BackupInfo) -> None:
    document = {
        "format": MANIFEST_FORMAT,
        "backup_id": info.backup_id,
        "created_at": info.created_at.isoformat(),
        "dialect": info.dialect,
        "revisions": list(info.revisions),
        "key_id": info.key_id,
        "kek_id": info.kek_id,
        "wrapped_key": base64.b64encode(info.wrapped_key).decode("ascii"),
        "rows": info.rows,
    }
    with store.open_writer(f"{info.backup_id}/{MANIFEST}") as writer:
        writer.write(json.dumps(document, indent=2, sort_keys=True).encode())


def _read_manifest(store: ObjectStore, backup_id: str) -> BackupInfo | None:
    try:
        with store.open_reader(f"{backup_id}/{MANIFEST}") as reader:
            document = json.loads(reader.read(MAX_MANIFEST_BYTES))
        if document["format"] != MANIFEST_FORMAT or document["backup_id"] != backup_id:
            return None
        return BackupInfo(
            backup_id=backup_id,
            created_at=datetime.fromisoformat(document["created_at"]),
            dialect=str(document["dialect"]),
            revisions=tuple(str(r) for r in document["revisions"]),
            key_id=str(document["key_id"]),
            kek_id=str(document["kek_id"]),
            wrapped_key=base64.b64decode(document["wrapped_key"], validate=True),
            rows=int(document["rows"]),
        )
    except (NotFound, ValueError, KeyError, TypeError, binascii.Error):
        return None
