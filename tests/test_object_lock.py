"""S3 Object Lock against the real SeaweedFS: retention on write, legal holds, deletions.

Each test gets a fresh bucket created with Object Lock on the session's
SeaweedFS, an embedded catalog and the local key provider. The store itself
is checked to refuse: a locked object cannot be deleted without bypassing
governance, and a held one not even with it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from deidentify.pipeline import StudyDeidentifier
from tests.services.vault_env import CaseContext, make_case
from tests.test_retention import advance, ingest_study, instance_ids, readable, retention_of
from vault.backup import create_backup
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.errors import StorageUnavailable
from vault.holds import lift_hold, place_hold
from vault.object_lock import study_object_keys
from vault.retention import erase_study, expire_studies
from vault.settings import S3StoreSettings, Settings
from vault.store.s3 import META_PREFIX, S3ObjectStore

pytestmark = pytest.mark.s3

LOCK_DAYS = 30


def remove_locked_bucket(client: Minio, bucket: str) -> None:
    """Lift every legal hold, delete every version bypassing governance, drop the bucket."""
    versions = list(client.list_objects(bucket, recursive=True, include_version=True))
    for item in versions:
        if not item.is_delete_marker:
            client.disable_object_legal_hold(bucket, item.object_name, item.version_id)
    doomed = [DeleteObject(item.object_name, item.version_id) for item in versions]
    errors = list(client.remove_objects(bucket, doomed, bypass_governance_mode=True))
    assert errors == []
    client.remove_bucket(bucket)


@pytest.fixture
def locked_settings(seaweedfs_s3: S3StoreSettings, s3_admin: Minio) -> Iterator[S3StoreSettings]:
    settings = seaweedfs_s3.model_copy(
        update={
            "bucket": f"locked-{secrets.token_hex(6)}",
            "object_lock": True,
            "object_lock_days": LOCK_DAYS,
        }
    )
    yield settings
    if s3_admin.bucket_exists(settings.bucket):
        remove_locked_bucket(s3_admin, settings.bucket)


@pytest.fixture
def locked_vault(tmp_path: Path, locked_settings: S3StoreSettings) -> Iterator[Vault]:
    store = S3ObjectStore.from_settings(locked_settings)
    assert store.supports_object_lock()
    opened = open_vault(Settings(data_dir=tmp_path / "data"), clock=FrozenClock(), store=store)
    yield opened
    opened.close()


@pytest.fixture
def locked_case(locked_vault: Vault) -> CaseContext:
    return make_case(locked_vault)


def objects_of(vault: Vault, study_id: str) -> list[str]:
    with vault.catalog.read_session() as session:
        return study_object_keys(session, study_id)


def versions_of(client: Minio, bucket: str, key: str) -> list[str]:
    return [
        str(item.version_id)
        for item in client.list_objects(bucket, prefix=key, include_version=True)
        if item.object_name == key
    ]


def lock_store(vault: Vault) -> S3ObjectStore:
    assert isinstance(vault.store, S3ObjectStore)
    return vault.store


class TestRetentionOnWrite:
    def test_data_objects_are_written_under_governance_until_their_retention(
        self, locked_case: CaseContext, s3_admin: Minio
    ) -> None:
        vault = locked_case.vault
        before = datetime.now(UTC)
        study_id = ingest_study(locked_case)
        after = datetime.now(UTC)
        store = lock_store(vault)
        keys = objects_of(vault, study_id)
        assert keys
        for key in keys:
            retention = s3_admin.get_object_retention(store.bucket, key)
            assert retention.mode == "GOVERNANCE"
            until = retention.retain_until_date
            low = before + timedelta(days=LOCK_DAYS) - timedelta(seconds=1)
            assert low <= until <= after + timedelta(days=LOCK_DAYS) + timedelta(seconds=1)

    def test_key_envelopes_and_backups_carry_no_retention(
        self, locked_case: CaseContext, s3_admin: Minio
    ) -> None:
        vault = locked_case.vault
        ingest_study(locked_case)
        create_backup(vault)
        store = lock_store(vault)
        names = [
            item.object_name
            for item in s3_admin.list_objects(store.bucket, prefix=META_PREFIX, recursive=True)
        ]
        assert any("/key-envelopes/" in n for n in names) and any("/backups/" in n for n in names)
        for name in names:
            with pytest.raises(S3Error):
                s3_admin.get_object_retention(store.bucket, name)
        assert not set(names) & set(store.iter_keys())


class TestTheStoreRefuses:
    def test_a_locked_object_cannot_be_deleted_without_bypassing_governance(
        self, locked_case: CaseContext, s3_admin: Minio
    ) -> None:
        vault = locked_case.vault
        study_id = ingest_study(locked_case)
        store = lock_store(vault)
        key = objects_of(vault, study_id)[0]
        (version,) = versions_of(s3_admin, store.bucket, key)
        with pytest.raises(S3Error) as refused:
            s3_admin.remove_object(store.bucket, key, version_id=version)
        assert refused.value.code == "AccessDenied"
        with pytest.raises(StorageUnavailable):
            store.purge(key)
        assert versions_of(s3_admin, store.bucket, key) == [version]
        assert all(readable(vault, i) for i in instance_ids(vault, study_id))

    def test_a_held_object_cannot_be_deleted_even_bypassing_governance(
        self, locked_case: CaseContext
    ) -> None:
        vault = locked_case.vault
        study_id = ingest_study(locked_case)
        place_hold(vault, reason_code="LIT-1", placed_by="cli", study_id=study_id)
        store = lock_store(vault)
        key = objects_of(vault, study_id)[0]
        with pytest.raises(StorageUnavailable):
            store.purge(key, bypass_governance=True)
        assert all(readable(vault, i) for i in instance_ids(vault, study_id))


class TestLegalHoldMirror:
    def test_a_hold_on_a_case_holds_every_object_of_its_studies_until_lifted(
        self, locked_case: CaseContext
    ) -> None:
        vault = locked_case.vault
        held = ingest_study(locked_case, seed=1)
        StudyDeidentifier(vault).run(held)
        other = make_case(vault, "CASE-OTHER")
        free = ingest_study(other, seed=2)
        store = lock_store(vault)
        held_keys, free_keys = objects_of(vault, held), objects_of(vault, free)
        assert len(held_keys) == 4, "two originals and their two pseudonymised copies"

        hold = place_hold(vault, reason_code="LIT-2", placed_by="cli", case_id=locked_case.case_id)
        assert all(store.legal_hold(key) for key in held_keys)
        assert not any(store.legal_hold(key) for key in free_keys)

        lift_hold(vault, hold.id, lifted_by="cli")
        assert not any(store.legal_hold(key) for key in held_keys)

    def test_lifting_one_of_two_holds_keeps_the_objects_held(
        self, locked_case: CaseContext
    ) -> None:
        vault = locked_case.vault
        study_id = ingest_study(locked_case)
        store = lock_store(vault)
        on_case = place_hold(vault, reason_code="A", placed_by="cli", case_id=locked_case.case_id)
        on_study = place_hold(vault, reason_code="B", placed_by="cli", study_id=study_id)
        lift_hold(vault, on_case.id, lifted_by="cli")
        assert all(store.legal_hold(key) for key in objects_of(vault, study_id))
        lift_hold(vault, on_study.id, lifted_by="cli")
        assert not any(store.legal_hold(key) for key in objects_of(vault, study_id))

    def test_objects_arriving_after_the_hold_are_held_by_the_daily_run(
        self, locked_case: CaseContext
    ) -> None:
        vault = locked_case.vault
        place_hold(vault, reason_code="LIT-3", placed_by="cli", case_id=locked_case.case_id)
        study_id = ingest_study(locked_case, seed=3)
        store = lock_store(vault)
        assert not any(store.legal_hold(key) for key in objects_of(vault, study_id))
        assert expire_studies(vault) == []
        assert all(store.legal_hold(key) for key in objects_of(vault, study_id))

    def test_a_store_refusing_to_lift_keeps_the_hold_active(
        self, locked_case: CaseContext, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        vault = locked_case.vault
        study_id = ingest_study(locked_case)
        hold = place_hold(vault, reason_code="LIT-4", placed_by="cli", study_id=study_id)

        def refuse(key: str, on: bool) -> None:
            raise StorageUnavailable("the object store refused (fault injected)")

        monkeypatch.setattr(lock_store(vault), "set_legal_hold", refuse)
        with pytest.raises(StorageUnavailable):
            lift_hold(vault, hold.id, lifted_by="cli")
        advance(vault, retention_of(vault, study_id))
        assert expire_studies(vault) == []
        assert all(readable(vault, i) for i in instance_ids(vault, study_id))


class TestShreddingUnderLock:
    def test_erasure_before_expiry_bypasses_governance_and_records_it(
        self, locked_case: CaseContext, s3_admin: Minio
    ) -> None:
        vault = locked_case.vault
        study_id = ingest_study(locked_case, seed=4)
        kept = ingest_study(locked_case, seed=5)
        keys = objects_of(vault, study_id)
        store = lock_store(vault)
        erase_study(vault, study_id, actor="user:dpo")
        assert all(versions_of(s3_admin, store.bucket, key) == [] for key in keys)
        (bypass,) = [e for e in vault.audit.events() if e.action == "store.bypass-governance"]
        assert (bypass.actor, bypass.object_id) == ("user:dpo", study_id)
        assert json.loads(bypass.detail) == {"objects": 2, "mode": "GOVERNANCE"}
        assert all(readable(vault, i) for i in instance_ids(vault, kept))

    def test_expiry_deletes_every_version_once_the_hold_is_lifted(
        self, locked_case: CaseContext, s3_admin: Minio
    ) -> None:
        vault = locked_case.vault
        study_id = ingest_study(locked_case, seed=6)
        keys = objects_of(vault, study_id)
        store = lock_store(vault)
        hold = place_hold(vault, reason_code="LIT-5", placed_by="cli", study_id=study_id)
        advance(vault, retention_of(vault, study_id))
        assert expire_studies(vault) == []
        assert all(versions_of(s3_admin, store.bucket, key) for key in keys)
        lift_hold(vault, hold.id, lifted_by="cli")
        assert expire_studies(vault) == [study_id]
        assert all(versions_of(s3_admin, store.bucket, key) == [] for key in keys)
