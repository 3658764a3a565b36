"""The checkpoint chain's migration: it matches the model, and numbers existing checkpoints."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from vault.audit import AuditRecord
from vault.audit_retention import CHECKPOINT_KEY_PURPOSE, verify_audit, write_checkpoint
from vault.catalog.db import make_engine, migrate
from vault.catalog.models import Base
from vault.catalog.retention import AuditCheckpoint
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.settings import Settings


def _diff_on(table: str, diff: list) -> list:
    return [d for d in diff if table in repr(d)]


def test_migrations_create_exactly_the_checkpoint_model(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert _diff_on("audit_checkpoints", diff) == []


def test_existing_checkpoints_are_numbered_in_the_order_they_were_written(tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine, "0004")
    rows = [  # id, kind, seq, at: a purge's two checkpoints share their time
        ("c", "periodic", 9, "2026-03-03 02:00:00.000000"),
        ("a", "periodic", 5, "2026-03-02 02:00:00.000000"),
        ("b", "purge", 7, "2026-03-03 02:00:00.000000"),
    ]
    with sqlite3.connect(db) as connection:
        connection.executemany(
            "INSERT INTO audit_checkpoints (id, kind, seq, hash, at, mac_key_id, mac)"
            " VALUES (?, ?, ?, '', ?, 'k', '')",
            rows,
        )
    migrate(engine)
    engine.dispose()
    with sqlite3.connect(db) as connection:
        found = connection.execute("SELECT id, number, prev_mac FROM audit_checkpoints ORDER BY 2")
        assert list(found) == [("a", 1, None), ("b", 2, None), ("c", 3, None)]


def _as_written_before_chaining(vault: Vault, checkpoint: AuditCheckpoint) -> None:
    """Re-sign ``checkpoint`` over the earlier message, as the previous release wrote it."""
    key = vault.keyring.provider.mac_key(CHECKPOINT_KEY_PURPOSE)
    stamp = checkpoint.at.isoformat(timespec="microseconds")
    message = f"dicom-vault-audit-checkpoint|periodic|{checkpoint.seq}|{checkpoint.hash}|{stamp}"
    with vault.catalog.session() as session:
        session.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.id == checkpoint.id)
            .values(prev_mac=None, mac=key.mac(message.encode()).hex())
        )


def test_checkpoints_from_before_the_chain_still_verify_and_the_chain_goes_on(
    tmp_path: Path,
) -> None:
    vault = open_vault(Settings(data_dir=tmp_path / "data"), clock=FrozenClock())
    try:
        vault.audit.record(AuditRecord("user:u1", "instance.read"))
        old = write_checkpoint(vault)
        assert old is not None
        _as_written_before_chaining(vault, old)
        assert verify_audit(vault) == []
        write_checkpoint(vault)
        assert verify_audit(vault) == []
    finally:
        vault.close()
