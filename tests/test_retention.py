"""Retention by crypto-shredding, and legal holds that suspend it.

The expiry tests run on each deployment (filesystem + SQLite, SeaweedFS +
PostgreSQL) with each key provider; time moves by a :class:`FrozenClock`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.keys import DataKey, _material
from deidentify.pipeline import StudyDeidentifier
from deidentify.tasks import create_celery_app
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.services.vault_env import CaseContext, make_case
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.key_periods import KeyPeriod, PendingDeletion, PeriodMember
from vault.catalog.models import DataKeyRecord, Instance, Organisation, Study
from vault.catalog.retention import Tombstone
from vault.clock import FrozenClock
from vault.core import Vault
from vault.errors import InvalidInput, NotFound, StorageUnavailable, UnderLegalHold
from vault.holds import lift_hold, list_holds, place_hold
from vault.key_envelopes import delete_envelope, read_envelope
from vault.key_periods import Sealer, sealed_under
from vault.objects import StoredObject, open_decrypted
from vault.reader import open_instance
from vault.retention import erase_study, expire_studies
from vault.retention_jobs import BACKUP_ROTATION_TASK, BACKUP_TASK, EXPIRE_TASK, PURGE_TASK

PATIENT = SyntheticPatient()
CLI = Path(sys.executable).with_name("dicom-vault")


def run_cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, check=check, timeout=120
    )


def ingest_study(case: CaseContext, *, seed: int = 0, n: int = 2, plant_phi: bool = False) -> str:
    """Ingest one small study into ``case``; its internal id."""
    results = [
        case.pipeline.ingest(io.BytesIO(encode(ds)), case.origin)
        for ds in make_ct_series(n, rows=32, columns=32, seed=seed, plant_phi=plant_phi)
    ]
    return results[0].study_id


def retention_of(vault: Vault, study_id: str) -> timedelta:
    with vault.catalog.session() as session:
        study = session.get(Study, study_id)
        days = session.get(Organisation, study.organisation_id).retention_days
    return timedelta(days=days)


def advance(vault: Vault, delta: timedelta) -> None:
    clock = vault.clock
    if not isinstance(clock, FrozenClock):
        raise TypeError("these tests need a FrozenClock")
    clock.advance(delta)


def instance_ids(vault: Vault, study_id: str) -> list[str]:
    with vault.catalog.session() as session:
        return list(session.scalars(select(Instance.id).where(Instance.study_id == study_id)))


def readable(vault: Vault, instance_id: str) -> bool:
    with open_instance(vault, instance_id) as stream:
        return bool(stream.read())


def pseudonymised_rows(vault: Vault, study_id: str) -> list[PseudonymisedInstance]:
    with vault.catalog.session() as session:
        return list(
            session.scalars(
                select(PseudonymisedInstance)
                .join(PseudonymisedStudy)
                .where(
                    PseudonymisedStudy.study_id == study_id,
                    PseudonymisedInstance.key_id.is_not(None),
                )
            )
        )


def actions(vault: Vault) -> list[str]:
    return [event.action for event in vault.audit.events()]


class TestExpiryAtRetention:
    def test_study_expires_at_its_retention_and_not_a_day_before(self, case: CaseContext) -> None:
        vault = case.vault
        study_id = ingest_study(case)
        advance(vault, retention_of(vault, study_id) - timedelta(days=1))
        assert expire_studies(vault) == []
        assert all(readable(vault, i) for i in instance_ids(vault, study_id))
        advance(vault, timedelta(days=1))
        assert expire_studies(vault) == [study_id]

    def test_expired_study_is_unreadable_and_none_of_its_objects_remains(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        study_id = ingest_study(case, seed=1)
        StudyDeidentifier(vault).run(study_id)
        originals = instance_ids(vault, study_id)
        copies = pseudonymised_rows(vault, study_id)
        assert copies, "the pseudonymised copy was not made"
        objects_before = set(vault.store.iter_keys())
        advance(vault, timedelta(days=200))
        other_id = ingest_study(case, seed=2)
        advance(vault, retention_of(vault, study_id) - timedelta(days=200))

        assert expire_studies(vault) == [study_id]

        for instance_id in originals:
            with pytest.raises((KeyDestroyedError, NotFound)):
                readable(vault, instance_id)
        for row in copies:
            stored = StoredObject(row.object_key, row.key_id, row.sha256, row.size)
            with pytest.raises(KeyDestroyedError):
                open_decrypted(vault.store, vault.keyring.data_key(row.key_id), stored)
        remaining = set(vault.store.iter_keys())
        assert not remaining & objects_before
        assert all(readable(vault, i) for i in instance_ids(vault, other_id))

    def test_every_key_of_the_study_and_its_copy_is_destroyed(self, case: CaseContext) -> None:
        vault = case.vault
        study_id = ingest_study(case, seed=3)
        StudyDeidentifier(vault).run(study_id)
        with vault.catalog.session() as session:
            keys = {session.get(Study, study_id).data_key_id}
            keys.add(
                session.scalar(
                    select(PseudonymisedStudy.data_key_id).where(
                        PseudonymisedStudy.study_id == study_id
                    )
                )
            )
        advance(vault, retention_of(vault, study_id))
        expire_studies(vault)
        with vault.catalog.session() as session:
            records = [session.get(DataKeyRecord, k) for k in keys]
        assert len(records) == 2
        assert all(r.wrapped is None and r.destroyed_at is not None for r in records)


class TestHeldStudy:
    def test_held_study_does_not_expire_until_the_hold_is_lifted(self, case: CaseContext) -> None:
        vault = case.vault
        study_id = ingest_study(case, seed=4)
        hold = place_hold(vault, reason_code="DISPUTE-2031.7", placed_by="cli", study_id=study_id)
        advance(vault, retention_of(vault, study_id) + timedelta(days=400))
        assert expire_studies(vault) == []
        assert all(readable(vault, i) for i in instance_ids(vault, study_id))
        lift_hold(vault, hold.id, lifted_by="cli")
        assert expire_studies(vault) == [study_id]


class TestExpiryRecords:
    def test_expiry_is_idempotent_and_logged_once(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        advance(vault, retention_of(vault, study_id))
        assert expire_studies(vault) == [study_id]
        assert expire_studies(vault) == []
        assert actions(vault).count("study.expire") == 1
        with vault.catalog.session() as session:
            tombstones = session.scalars(select(Tombstone)).all()
            assert session.get(Study, study_id) is None
        assert [(t.study_id, t.reason, t.instance_count) for t in tombstones] == [
            (study_id, "expired", 2)
        ]
        assert vault.audit.verify() == []

    def test_tombstone_and_log_carry_no_phi(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case, plant_phi=True)
        first = next(make_ct_series(1, rows=32, columns=32, seed=0, plant_phi=True))
        uids = [
            str(first.StudyInstanceUID),
            str(first.SeriesInstanceUID),
            str(first.SOPInstanceUID),
        ]
        advance(vault, retention_of(vault, study_id))
        expire_studies(vault)
        with vault.catalog.engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM tombstones")).all()
        events = [e for e in vault.audit.events() if e.action == "study.expire"]
        dumped = repr(rows) + json.dumps([[e.object_id, e.detail] for e in events])
        assert rows and events
        for marker in [*PATIENT.markers(), *uids]:
            assert marker.lower() not in dumped.lower()

    def test_nothing_is_left_in_the_study_tables(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        StudyDeidentifier(vault).run(study_id)
        advance(vault, retention_of(vault, study_id))
        expire_studies(vault)
        tables = [
            "studies",
            "series",
            "instances",
            "pseudonymised_studies",
            "pseudonymised_instances",
        ]
        assert set(tables) <= set(inspect(vault.catalog.engine).get_table_names())
        with vault.catalog.engine.connect() as conn:
            counts = {t: conn.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar() for t in tables}
        assert counts == dict.fromkeys(tables, 0)


class TestLegalHolds:
    def test_hold_on_a_case_covers_each_of_its_studies(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        other = make_case(vault, "CASE-0002")
        other_id = ingest_study(other, seed=9)
        place_hold(vault, reason_code="LIT-1", placed_by="cli", case_id=embedded_case.case_id)
        advance(vault, retention_of(vault, study_id))
        assert expire_studies(vault) == [other_id]
        assert all(readable(vault, i) for i in instance_ids(vault, study_id))

    def test_place_and_lift_are_recorded_in_the_access_log(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        hold = place_hold(vault, reason_code="LIT-2", placed_by="user:dpo", study_id=study_id)
        lift_hold(vault, hold.id, lifted_by="user:dpo")
        events = [e for e in vault.audit.events() if e.action.startswith("hold.")]
        assert [(e.action, e.actor, e.object_id) for e in events] == [
            ("hold.place", "user:dpo", hold.id),
            ("hold.lift", "user:dpo", hold.id),
        ]
        assert json.loads(events[0].detail) == {
            "reason_code": "LIT-2",
            "target_id": study_id,
            "target_type": "study",
        }

    def test_lifted_holds_are_listed_only_when_asked(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        case_id = embedded_case.case_id
        kept = place_hold(vault, reason_code="A", placed_by="cli", case_id=case_id)
        lifted = place_hold(vault, reason_code="B", placed_by="cli", case_id=case_id)
        lift_hold(vault, lifted.id, lifted_by="cli")
        assert [h.id for h in list_holds(vault)] == [kept.id]
        assert {h.id for h in list_holds(vault, include_lifted=True)} == {kept.id, lifted.id}

    @pytest.mark.parametrize("code", ["", "has space", "x" * 41, "name/slash", "Müller"])
    def test_malformed_reason_code_is_refused(self, embedded_case: CaseContext, code: str) -> None:
        with pytest.raises(InvalidInput):
            place_hold(
                embedded_case.vault,
                reason_code=code,
                placed_by="cli",
                case_id=embedded_case.case_id,
            )
        assert list_holds(embedded_case.vault) == []

    def test_hold_names_exactly_one_existing_target(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        with pytest.raises(InvalidInput):
            place_hold(vault, reason_code="A", placed_by="cli")
        with pytest.raises(InvalidInput):
            place_hold(
                vault,
                reason_code="A",
                placed_by="cli",
                case_id=embedded_case.case_id,
                study_id=study_id,
            )
        with pytest.raises(NotFound):
            place_hold(vault, reason_code="A", placed_by="cli", study_id="0" * 32)

    def test_a_hold_is_lifted_only_once(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        hold = place_hold(vault, reason_code="A", placed_by="cli", case_id=embedded_case.case_id)
        lift_hold(vault, hold.id, lifted_by="cli")
        with pytest.raises(InvalidInput):
            lift_hold(vault, hold.id, lifted_by="cli")
        with pytest.raises(NotFound):
            lift_hold(vault, "0" * 32, lifted_by="cli")


class TestDailyJobs:
    def test_the_four_jobs_backup_rotation_included_are_on_the_daily_beat_schedule(
        self, embedded_vault: Vault
    ) -> None:
        app = create_celery_app(embedded_vault.settings, vault=embedded_vault)
        schedule = app.conf.beat_schedule
        tasks = {entry["task"] for entry in schedule.values()}
        assert tasks == {EXPIRE_TASK, PURGE_TASK, BACKUP_TASK, BACKUP_ROTATION_TASK}
        hour = embedded_vault.settings.retention.daily_run_hour_utc
        assert all(entry["schedule"].hour == {hour} for entry in schedule.values())

    def test_expire_task_erases_expired_studies(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        app = create_celery_app(vault.settings, vault=vault)
        advance(vault, retention_of(vault, study_id))
        assert app.tasks[EXPIRE_TASK].delay().get() == {"expired": 1}
        with vault.catalog.session() as session:
            assert session.get(Study, study_id) is None


class TestCommandLine:
    def test_hold_retention_and_audit_commands_on_the_embedded_default(
        self, tmp_path: Path
    ) -> None:
        data = tmp_path / "var"
        new_org = ("--organisation", "Demo Hospital", "--new-organisation")
        run_cli(data, "case", "create", "CASE-9", *new_org)
        placed = run_cli(data, "hold", "place", "--case", "CASE-9", "--reason", "LIT-9").stdout
        hold_id = placed.split()[2]
        listed = run_cli(data, "hold", "list").stdout
        assert hold_id in listed and "reason=LIT-9" in listed
        refused = run_cli(
            data, "hold", "place", "--case", "CASE-9", "--reason", "no good", check=False
        )
        assert refused.returncode == 2
        run_cli(data, "hold", "lift", hold_id)
        assert run_cli(data, "hold", "list").stdout == ""
        assert hold_id in run_cli(data, "hold", "list", "--all").stdout
        assert run_cli(data, "retention", "run").stdout.strip() == "expired 0 studies"
        assert run_cli(data, "audit", "checkpoint").stdout.startswith("checkpoint at record ")
        assert run_cli(data, "audit", "purge").stdout.strip() == "purged 0 access-log records"
        assert run_cli(data, "audit", "verify").stdout.strip() == "access log intact"


def period_row(vault: Vault, study_id: str) -> KeyPeriod:
    with vault.catalog.session() as session:
        key_id = session.get(Study, study_id).data_key_id
        member = session.get(PeriodMember, key_id)
        return session.get(KeyPeriod, member.period)


def wrapped_copy(vault: Vault, study_id: str) -> tuple[str, str, bytes]:
    """What a backup taken now would hold for the study's data key."""
    with vault.catalog.session() as session:
        record = session.get(DataKeyRecord, session.get(Study, study_id).data_key_id)
        return record.id, str(record.kek_id), bytes(record.wrapped)


def opens(vault: Vault, copy: tuple[str, str, bytes]) -> bool:
    """Whether a wrapped copy still opens (raises KeyDestroyedError when it no longer can)."""
    return bool(Sealer(vault.keyring.provider, None).unwrap(*copy).key_id)


class TestErasure:
    def test_erased_study_is_unreadable_and_leaves_an_erased_tombstone(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        study_id = ingest_study(case, seed=31)
        StudyDeidentifier(vault).run(study_id)
        other = ingest_study(case, seed=32)
        copies = pseudonymised_rows(vault, study_id)
        with vault.catalog.session() as session:
            key_ids = {session.get(Study, study_id).data_key_id, *(c.key_id for c in copies)}
        objects_before = set(vault.store.iter_keys())
        with vault.catalog.session() as session:
            originals = set(
                session.scalars(select(Instance.object_key).where(Instance.study_id == study_id))
            )
        erased_objects = originals | {c.object_key for c in copies}
        assert len(erased_objects) == 4

        tombstone = erase_study(vault, study_id, actor="user:dpo")

        assert (tombstone.study_id, tombstone.reason) == (study_id, "erased")
        for row in copies:
            stored = StoredObject(row.object_key, row.key_id, row.sha256, row.size)
            with pytest.raises(KeyDestroyedError):
                open_decrypted(vault.store, vault.keyring.data_key(row.key_id), stored)
        assert set(vault.store.iter_keys()) == objects_before - erased_objects
        envelopes = vault.keyring.envelopes
        assert envelopes is not None and not key_ids & set(envelopes.iter_keys())
        assert all(readable(vault, i) for i in instance_ids(vault, other))
        erase = [e for e in vault.audit.events() if e.action == "study.erase"]
        assert [(e.actor, e.object_id) for e in erase] == [("user:dpo", study_id)]

    def test_a_held_study_is_refused_and_left_as_it_was(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        place_hold(vault, reason_code="LIT-8", placed_by="cli", case_id=embedded_case.case_id)
        with pytest.raises(UnderLegalHold):
            erase_study(vault, study_id, actor="user:dpo")
        assert all(readable(vault, i) for i in instance_ids(vault, study_id))
        assert "study.erase" not in actions(vault)

    def test_unknown_study_and_malformed_reason_are_refused(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        with pytest.raises(NotFound):
            erase_study(vault, "0" * 32, actor="cli")
        with pytest.raises(InvalidInput):
            erase_study(vault, study_id, actor="cli", reason="not a code")
        erase_study(vault, study_id, actor="cli", reason="ART17-2026-3")
        with pytest.raises(NotFound):
            erase_study(vault, study_id, actor="cli")


class TestKeyPeriods:
    def test_erasure_replaces_the_period_generation_so_old_copies_no_longer_open(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        erased = ingest_study(case, seed=41)
        survivor = ingest_study(case, seed=42)
        generation = period_row(vault, survivor).kek_id
        erased_copy, survivor_copy = wrapped_copy(vault, erased), wrapped_copy(vault, survivor)
        assert opens(vault, erased_copy) and opens(vault, survivor_copy)

        erase_study(vault, erased, actor="cli")

        row = period_row(vault, survivor)
        assert row.kek_id != generation and not row.needs_rotation and not row.retire_pending
        for copy in (erased_copy, survivor_copy):
            with pytest.raises(KeyDestroyedError):
                opens(vault, copy)
        assert opens(vault, wrapped_copy(vault, survivor))
        assert all(readable(vault, i) for i in instance_ids(vault, survivor))
        envelope = read_envelope(vault.keyring.envelopes, survivor_copy[0])
        assert (envelope.kek_id, envelope.wrapped) == wrapped_copy(vault, survivor)[1:]

    def test_a_past_period_with_no_key_left_is_destroyed_whole(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        study_id = ingest_study(embedded_case)
        period = period_row(vault, study_id).period
        advance(vault, timedelta(days=40))
        erase_study(vault, study_id, actor="cli")
        with vault.catalog.session() as session:
            row = session.get(KeyPeriod, period)
        assert row.kek_id is None and row.destroyed_at is not None
        assert vault.keyring.provider.period_kek_id(period, create=False) is None

    def test_a_held_key_keeps_its_period_alive_until_released(self, case: CaseContext) -> None:
        vault = case.vault
        held = ingest_study(case, seed=43)
        other = ingest_study(case, seed=44)
        hold = place_hold(vault, reason_code="LIT-9", placed_by="cli", study_id=held)
        period = period_row(vault, held).period
        advance(vault, retention_of(vault, held))
        assert expire_studies(vault) == [other]
        assert period_row(vault, held).kek_id is not None
        assert all(readable(vault, i) for i in instance_ids(vault, held))
        lift_hold(vault, hold.id, lifted_by="cli")
        assert expire_studies(vault) == [held]
        assert vault.keyring.provider.period_kek_id(period, create=False) is None

    def test_a_key_joining_while_its_period_rotates_is_sealed_anew(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        erased = ingest_study(embedded_case, seed=45)
        pending = vault.keyring.generate()
        erase_study(vault, erased, actor="cli")
        with vault.catalog.session() as session:
            vault.keyring.persist(session, pending)
        with vault.catalog.session() as session:
            record = session.get(DataKeyRecord, pending.key.key_id)
            assert sealed_under(record.wrapped) == session.get(KeyPeriod, pending.period).kek_id
            assert record.wrapped != pending.wrapped.blob
            stored = (record.id, str(record.kek_id), bytes(record.wrapped))
        with pytest.raises(KeyDestroyedError):
            opens(vault, (pending.key.key_id, pending.wrapped.kek_id, pending.wrapped.blob))
        unwrapped = Sealer(vault.keyring.provider, None).unwrap(*stored)
        assert _material(unwrapped) == _material(pending.key)

    def test_keys_from_before_period_keys_still_open_and_join_a_period_on_rewrap(
        self, embedded_vault: Vault
    ) -> None:
        vault = embedded_vault
        key = DataKey.generate()
        wrapped = vault.keyring.provider.wrap(key)
        with vault.catalog.session() as session:
            session.add(
                DataKeyRecord(
                    id=key.key_id,
                    kek_id=wrapped.kek_id,
                    wrapped=wrapped.blob,
                    created_at=vault.clock.now(),
                )
            )
        assert vault.keyring.data_key(key.key_id).key_id == key.key_id
        report = vault.keyring.rewrap_all()
        assert report.rewrapped == 1
        with vault.catalog.session() as session:
            record = session.get(DataKeyRecord, key.key_id)
            assert sealed_under(record.wrapped) is not None
            assert session.get(PeriodMember, key.key_id) is not None
            stored = (record.id, str(record.kek_id), bytes(record.wrapped))
        unwrapped = Sealer(vault.keyring.provider, None).unwrap(*stored)
        assert _material(unwrapped) == _material(key)


class TestInterruptedShredding:
    def test_the_daily_run_seals_what_an_interrupted_erasure_left(
        self, embedded_case: CaseContext, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        vault = embedded_case.vault
        erased = ingest_study(embedded_case, seed=51)
        ingest_study(embedded_case, seed=52)
        copy = wrapped_copy(vault, erased)

        def provider_down() -> None:
            raise KeyProviderError("the key provider is unreachable (fault injected)")

        monkeypatch.setattr(vault.keyring, "seal_periods", provider_down)
        erase_study(vault, erased, actor="cli")
        assert period_row_by_key(vault, copy[0]).needs_rotation
        assert opens(vault, copy)
        monkeypatch.undo()
        expire_studies(vault)
        with pytest.raises(KeyDestroyedError):
            opens(vault, copy)

    def test_a_damaged_key_row_of_a_survivor_does_not_stop_the_sealing(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        erased = ingest_study(embedded_case, seed=54)
        damaged = ingest_study(embedded_case, seed=55)
        copy = wrapped_copy(vault, erased)
        damage_key_row(vault, damaged)

        erase_study(vault, erased, actor="cli")

        assert not period_row_by_key(vault, copy[0]).needs_rotation
        with pytest.raises(KeyDestroyedError):
            opens(vault, copy)
        assert all(readable(vault, i) for i in instance_ids(vault, damaged))

    def test_a_period_that_cannot_be_sealed_does_not_hold_back_the_others(
        self, embedded_case: CaseContext
    ) -> None:
        vault = embedded_case.vault
        stuck = ingest_study(embedded_case, seed=56)
        broken = ingest_study(embedded_case, seed=57)
        advance(vault, timedelta(days=32))
        erased = ingest_study(embedded_case, seed=58)
        ingest_study(embedded_case, seed=59)
        copy = wrapped_copy(vault, erased)
        damage_key_row(vault, broken)
        assert vault.keyring.envelopes is not None
        delete_envelope(vault.keyring.envelopes, wrapped_copy(vault, broken)[0])

        erase_study(vault, stuck, actor="cli")
        erase_study(vault, erased, actor="cli")

        assert period_row(vault, broken).needs_rotation
        with pytest.raises(KeyDestroyedError):
            opens(vault, copy)
        with pytest.raises(KeyProviderError):
            vault.keyring.seal_periods()

    def test_objects_the_store_could_not_delete_are_deleted_by_the_daily_run(
        self, embedded_case: CaseContext, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        vault = embedded_case.vault
        erased = ingest_study(embedded_case, seed=53)
        objects = set(vault.store.iter_keys())

        def store_down(key: str) -> None:
            raise StorageUnavailable("the object store is unreachable (fault injected)")

        monkeypatch.setattr(vault.store, "delete", store_down)
        erase_study(vault, erased, actor="cli")
        assert set(vault.store.iter_keys()) == objects
        monkeypatch.undo()
        expire_studies(vault)
        assert set(vault.store.iter_keys()) == set()
        with vault.catalog.session() as session:
            assert session.scalars(select(PendingDeletion)).all() == []


def damage_key_row(vault: Vault, study_id: str) -> None:
    """Flip the last bit of the study's sealed data key in the catalog (bit rot, a stray UPDATE)."""
    with vault.catalog.session() as session:
        record = session.get(DataKeyRecord, session.get(Study, study_id).data_key_id)
        record.wrapped = record.wrapped[:-1] + bytes([record.wrapped[-1] ^ 1])


def period_row_by_key(vault: Vault, key_id: str) -> KeyPeriod:
    with vault.catalog.session() as session:
        return session.get(KeyPeriod, session.get(PeriodMember, key_id).period)
