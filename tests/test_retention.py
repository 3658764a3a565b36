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

from crypto.errors import KeyDestroyedError
from deidentify.pipeline import StudyDeidentifier
from deidentify.tasks import create_celery_app
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.services.vault_env import CaseContext, make_case
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import DataKeyRecord, Instance, Organisation, Study
from vault.catalog.retention import Tombstone
from vault.clock import FrozenClock
from vault.core import Vault
from vault.errors import InvalidInput, NotFound
from vault.holds import lift_hold, list_holds, place_hold
from vault.objects import StoredObject, open_decrypted
from vault.reader import open_instance
from vault.retention import expire_studies
from vault.retention_jobs import EXPIRE_TASK, PURGE_TASK

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
    def test_both_jobs_are_on_the_daily_beat_schedule(self, embedded_vault: Vault) -> None:
        app = create_celery_app(embedded_vault.settings, vault=embedded_vault)
        schedule = app.conf.beat_schedule
        assert {entry["task"] for entry in schedule.values()} == {EXPIRE_TASK, PURGE_TASK}
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
        run_cli(data, "case", "create", "CASE-9", "--organisation", "Demo Hospital")
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
