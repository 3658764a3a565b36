"""Encrypted catalog backups, their rotation, and what a restore can and cannot bring back.

Most tests run on each deployment (filesystem + SQLite, SeaweedFS +
PostgreSQL) with each key provider, through the ``vault`` fixture. Time moves
by a :class:`FrozenClock`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg import sql
from sqlalchemy import delete, select, text

from crypto.errors import IntegrityError, KeyDestroyedError, KeyProviderError
from deidentify.tasks import create_celery_app
from dicom_ingest import IngestOrigin, IngestPipeline, ValidationPolicy
from tests.services import postgres as pg
from tests.services.vault_env import CaseContext
from tests.test_retention import advance, ingest_study, instance_ids, readable, run_cli
from vault.admin import create_case, get_or_create_organisation
from vault.audit import AuditRecord
from vault.audit_retention import purge_audit, verify_audit, write_checkpoint
from vault.backup import (
    DUMP,
    MANIFEST,
    backups_store,
    create_backup,
    list_backups,
    restore_backup,
    rotate_backups,
)
from vault.catalog.models import DataKeyRecord, Study
from vault.catalog.retention import AuditCheckpoint
from vault.core import Vault, open_vault
from vault.errors import CatalogNotEmpty, NotFound
from vault.holds import place_hold
from vault.key_periods import Sealer
from vault.retention import erase_study, expire_studies
from vault.retention_jobs import BACKUP_ROTATION_TASK

COMPARED_TABLES = ("organisations", "cases", "studies", "series", "instances", "legal_holds")


def start_of_next_month(vault: Vault) -> None:
    """Move the clock to 01:00 UTC on the 1st of next month: a whole key period ahead."""
    now = vault.clock.now()
    first = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, 1, tzinfo=UTC)
    advance(vault, first - now)


def short_retention_case(vault: Vault, days: int = 2) -> CaseContext:
    """A case of an organisation whose studies expire after ``days`` days."""
    with vault.catalog.session() as session:
        organisation = get_or_create_organisation(session, "Short Retention Clinic")
        organisation.retention_days = days
        case = create_case(session, "CASE-SHORT", organisation)
        origin = IngestOrigin("cli", "cli", organisation.id, case.id)
    pipeline = IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy))
    return CaseContext(vault, pipeline, origin, case.id)


def rows_of(vault: Vault, table: str) -> list[tuple]:
    with vault.catalog.engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(text(f'SELECT * FROM "{table}"')))


def catalog_rows(vault: Vault) -> dict[str, list[tuple]]:
    return {table: rows_of(vault, table) for table in COMPARED_TABLES}


def wrapped_form(vault: Vault, study_id: str) -> tuple[str, str, bytes]:
    with vault.catalog.session() as session:
        key_id = session.get(Study, study_id).data_key_id
        record = session.get(DataKeyRecord, key_id)
        return key_id, str(record.kek_id), bytes(record.wrapped)


def read_all(vault: Vault, study_id: str) -> list[bytes]:
    from vault.reader import open_instance

    result = []
    for instance_id in sorted(instance_ids(vault, study_id)):
        with open_instance(vault, instance_id) as stream:
            result.append(stream.read())
    return result


@pytest.fixture
def second_catalog_url(vault: Vault, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated catalog of the same kind as ``vault``'s, for a restore elsewhere."""
    if vault.catalog.engine.dialect.name == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'catalog.sqlite3'}"
        return
    name = f"dv_restore_{secrets.token_hex(6)}"
    with pg._admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg._sqlalchemy_url(name)
    finally:
        pg._drop(name)


class TestRoundTrip:
    def test_restore_into_an_empty_catalog_gives_back_every_row_and_object(
        self, case: CaseContext, second_catalog_url: str
    ) -> None:
        vault = case.vault
        first = ingest_study(case, seed=1)
        second = ingest_study(case, seed=2, n=3)
        place_hold(vault, reason_code="LIT-7", placed_by="cli", study_id=second)
        before = catalog_rows(vault)
        contents = {s: read_all(vault, s) for s in (first, second)}
        backup = create_backup(vault, actor="cli")

        settings = vault.settings.model_copy(deep=True)
        settings.catalog.url = second_catalog_url
        elsewhere = open_vault(
            settings, clock=vault.clock, provider=vault.keyring.provider, store=vault.store
        )
        try:
            report = restore_backup(elsewhere, backup.backup_id, actor="cli")
            assert report.rows == backup.rows > 0
            assert catalog_rows(elsewhere) == before
            assert {s: read_all(elsewhere, s) for s in (first, second)} == contents
            assert elsewhere.audit.verify() == []
            actions = [e.action for e in elsewhere.audit.events()]
            assert actions[-1] == "backup.restore" and "backup.create" not in actions
        finally:
            elsewhere.close()

    def test_forced_restore_brings_the_catalog_back_to_the_backup(self, case: CaseContext) -> None:
        vault = case.vault
        kept = ingest_study(case, seed=3)
        before = catalog_rows(vault)
        backup = create_backup(vault)
        later = ingest_study(case, seed=4)
        with pytest.raises(CatalogNotEmpty):
            restore_backup(vault, backup.backup_id)
        restore_backup(vault, backup.backup_id, force=True)
        assert catalog_rows(vault) == before
        with vault.catalog.session() as session:
            assert session.get(Study, later) is None
        assert read_all(vault, kept)
        ingest_study(case, seed=5)
        assert vault.audit.verify() == []

    def test_backups_are_listed_oldest_first_and_unknown_ids_refused(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        ingest_study(embedded_case)
        first = create_backup(vault)
        advance(vault, timedelta(hours=1))
        second = create_backup(vault)
        assert [b.backup_id for b in list_backups(vault)] == [first.backup_id, second.backup_id]
        for unknown in ("20990101T000000Z-00000000", "../catalog", ""):
            with pytest.raises(NotFound):
                restore_backup(vault, unknown, force=True)


class TestAccessLogSurvivesRestore:
    """A restore never takes the access log back to the backup's time."""

    def test_records_made_since_the_backup_survive_its_restore_and_verify(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        ingest_study(case, seed=6)
        backup = create_backup(vault)
        advance(vault, timedelta(days=2))
        vault.audit.record(AuditRecord("user:u9", "study.download", object_id="after-backup"))
        write_checkpoint(vault)
        before = [(e.seq, e.hash) for e in vault.audit.events()]
        restore_backup(vault, backup.backup_id, force=True)
        after = list(vault.audit.events())
        assert [(e.seq, e.hash) for e in after[: len(before)]] == before
        (restored,) = [e for e in after[len(before) :] if e.action == "backup.restore"]
        assert json.loads(restored.detail)["access_log"] == "kept"
        assert verify_audit(vault) == []

    def test_the_restore_is_pinned_by_a_checkpoint_as_it_is_recorded(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        ingest_study(embedded_case, seed=8)
        backup = create_backup(vault)
        restore_backup(vault, backup.backup_id, force=True)
        restored = [e for e in vault.audit.events() if e.action == "backup.restore"][-1]
        with vault.catalog.session() as session:
            pins = session.scalars(
                select(AuditCheckpoint.seq).where(AuditCheckpoint.kind == "periodic")
            ).all()
            assert restored.seq in pins
            # Without its checkpoint, the restore's record is what an editor of
            # the catalog could rewrite unseen: verify says it is missing.
            session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq == restored.seq))
        assert [b.seq for b in verify_audit(vault)] == [restored.seq]

    def test_the_live_log_wins_over_the_backups_copy_of_it(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        for i in range(3):
            vault.audit.record(AuditRecord("user:u1", "instance.read", object_id=str(i)))
        backup = create_backup(vault)
        advance(vault, timedelta(days=400))
        purge_audit(vault)  # the live log has purged what the backup still holds
        live = [(e.seq, e.hash) for e in vault.audit.events()]
        restore_backup(vault, backup.backup_id, force=True)
        assert [(e.seq, e.hash) for e in vault.audit.events()][: len(live)] == live
        assert verify_audit(vault) == []


class TestShreddedStaysShredded:
    def test_studies_erased_or_expired_after_a_backup_stay_unreadable_after_its_restore(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        start_of_next_month(vault)
        short = short_retention_case(vault)
        expiring = ingest_study(short, seed=11)
        erased = ingest_study(case, seed=12)
        survivor = ingest_study(case, seed=13)
        survivor_bytes = read_all(vault, survivor)
        backup = create_backup(vault)
        old_copy = wrapped_form(vault, erased)

        erase_study(vault, erased, actor="user:dpo")
        advance(vault, timedelta(days=3))
        assert expire_studies(vault) == [expiring]
        with pytest.raises(KeyDestroyedError):
            Sealer(vault.keyring.provider, None).unwrap(*old_copy)

        report = restore_backup(vault, backup.backup_id, force=True)
        assert report.keys.destroyed == 2
        for study_id in (erased, expiring):
            instances = instance_ids(vault, study_id)
            assert instances, "the restored catalog lists the study again"
            for instance_id in instances:
                with pytest.raises(KeyDestroyedError):
                    readable(vault, instance_id)
        assert read_all(vault, survivor) == survivor_bytes

    def test_a_later_backup_does_not_bring_back_what_an_earlier_one_missed(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        erased = ingest_study(embedded_case, seed=21)
        kept = ingest_study(embedded_case, seed=22)
        early = create_backup(vault)
        erase_study(vault, erased, actor="cli")
        late = create_backup(vault)
        restore_backup(vault, early.backup_id, force=True)
        restore_backup(vault, late.backup_id, force=True)
        with vault.catalog.session() as session:
            assert session.get(Study, erased) is None
        restore_backup(vault, early.backup_id, force=True)
        with pytest.raises(KeyDestroyedError):
            read_all(vault, erased)
        assert read_all(vault, kept)

    def test_a_restore_first_seals_what_an_interrupted_erasure_left(
        self, embedded_case: CaseContext, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        vault = embedded_case.vault
        erased = ingest_study(embedded_case, seed=23)
        kept = ingest_study(embedded_case, seed=24)
        backup = create_backup(vault)

        def provider_down() -> None:
            raise KeyProviderError("the key provider is unreachable (fault injected)")

        monkeypatch.setattr(vault.keyring, "seal_periods", provider_down)
        erase_study(vault, erased, actor="cli")
        monkeypatch.undo()
        report = restore_backup(vault, backup.backup_id, force=True)
        assert report.keys.destroyed == 1
        with pytest.raises(KeyDestroyedError):
            read_all(vault, erased)
        assert read_all(vault, kept)


class TestTampering:
    def _tamper(self, vault: Vault, name: str, offset: int) -> None:
        store = backups_store(vault)
        with store.open_reader(name) as reader:
            data = bytearray(reader.read())
        data[offset % len(data)] ^= 0x01
        store.delete(name)
        with store.open_writer(name) as writer:
            writer.write(bytes(data))

    @pytest.mark.parametrize("offset", [100, -40])
    def test_a_flipped_byte_in_the_dump_fails_the_restore_and_changes_nothing(
        self, case: CaseContext, offset: int
    ) -> None:
        vault = case.vault
        ingest_study(case)
        backup = create_backup(vault)
        ingest_study(case, seed=6)
        before = catalog_rows(vault)
        self._tamper(vault, f"{backup.backup_id}/{DUMP}", offset)
        with pytest.raises(IntegrityError):
            restore_backup(vault, backup.backup_id, force=True)
        assert catalog_rows(vault) == before

    def test_a_dump_cut_short_fails_the_restore(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        ingest_study(embedded_case)
        backup = create_backup(vault)
        store = backups_store(vault)
        name = f"{backup.backup_id}/{DUMP}"
        with store.open_reader(name) as reader:
            data = reader.read()
        store.delete(name)
        with store.open_writer(name) as writer:
            writer.write(data[: len(data) // 2])
        before = catalog_rows(vault)
        with pytest.raises(IntegrityError):
            restore_backup(vault, backup.backup_id, force=True)
        assert catalog_rows(vault) == before

    def test_a_dump_under_another_backups_manifest_fails(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        ingest_study(embedded_case)
        first = create_backup(vault)
        second = create_backup(vault)
        store = backups_store(vault)
        with store.open_reader(f"{first.backup_id}/{DUMP}") as reader:
            data = reader.read()
        store.delete(f"{second.backup_id}/{DUMP}")
        with store.open_writer(f"{second.backup_id}/{DUMP}") as writer:
            writer.write(data)
        with pytest.raises(IntegrityError):
            restore_backup(vault, second.backup_id, force=True)

    def test_the_backup_holds_no_catalog_value_in_clear(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        backup = create_backup(vault)
        store = backups_store(vault)
        stored = b""
        for name in (f"{backup.backup_id}/{DUMP}", f"{backup.backup_id}/{MANIFEST}"):
            with store.open_reader(name) as reader:
                stored += reader.read()
        with vault.catalog.session() as session:
            digest = session.get(Study, study_id).study_uid_digest
        assert study_id.encode() not in stored and digest.encode() not in stored
        assert b"Test Hospital" not in stored


class TestRotation:
    def test_backups_older_than_six_months_are_deleted_by_the_next_backup(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        ingest_study(case)
        old = create_backup(vault)
        advance(vault, timedelta(days=vault.settings.retention.backup_retention_days - 1))
        recent = create_backup(vault)
        assert {b.backup_id for b in list_backups(vault)} == {old.backup_id, recent.backup_id}
        advance(vault, timedelta(days=2))
        newest = create_backup(vault)
        assert [b.backup_id for b in list_backups(vault)] == [recent.backup_id, newest.backup_id]
        leftovers = [key for key in backups_store(vault).iter_keys() if old.backup_id in key]
        assert leftovers == []
        rotations = [e for e in vault.audit.events() if e.action == "backup.rotate"]
        assert len(rotations) == 1

    def test_rotation_alone_keeps_backups_within_their_retention(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        backup = create_backup(vault)
        days = vault.settings.retention.backup_retention_days
        advance(vault, timedelta(days=days))
        assert rotate_backups(vault) == []
        advance(vault, timedelta(seconds=1))
        assert rotate_backups(vault) == [backup.backup_id]
        assert list_backups(vault) == []

    def test_the_daily_job_rotates_backups(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        app = create_celery_app(vault.settings, vault=vault)
        create_backup(vault)
        assert app.tasks[BACKUP_ROTATION_TASK].delay().get() == {"deleted": 0}
        advance(vault, timedelta(days=vault.settings.retention.backup_retention_days + 1))
        assert app.tasks[BACKUP_ROTATION_TASK].delay().get() == {"deleted": 1}
        assert list_backups(vault) == []


class TestCommandLine:
    def test_backup_list_and_restore_commands(self, tmp_path: Path) -> None:
        data = tmp_path / "var"
        new_org = ("--organisation", "Demo Hospital", "--new-organisation")
        run_cli(data, "case", "create", "CASE-1", *new_org)
        made = run_cli(data, "backup").stdout
        backup_id = made.split()[1]
        assert backup_id in run_cli(data, "backup", "list").stdout
        refused = run_cli(data, "restore", backup_id, check=False)
        assert refused.returncode == 2 and "--force" in refused.stderr
        restored = run_cli(data, "restore", backup_id, "--force").stdout
        assert f"restored {backup_id}" in restored
        unknown = run_cli(data, "restore", "20990101T000000Z-00000000", "--force", check=False)
        assert unknown.returncode == 2
