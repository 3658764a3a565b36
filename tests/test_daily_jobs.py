"""The daily jobs: expiry, access-log purge and catalog backup, and the runner
that keeps them going without a broker.

The jobs run on an embedded vault whose clock is moved by years; a job made
to fail (fault injection) does not stop the others. The Celery side (beat's
schedule, the tasks) is in tests/test_retention.py and tests/test_backup.py.
"""

from __future__ import annotations

import io
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from deidentify.tasks import create_celery_app
from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.admin import create_user, get_or_create_organisation
from vault.auth.sessions import SessionStore
from vault.auth.throttle import Throttle, account_key, address_key
from vault.backup import create_backup, list_backups
from vault.catalog.accounts import LoginSession, LoginThrottle
from vault.catalog.models import Study
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.daily_jobs import DAILY_JOBS, DailyRunner, next_run, run_daily_jobs
from vault.errors import StorageUnavailable
from vault.retention_jobs import BACKUP_TASK
from vault.settings import RetentionSettings, Settings

FIVE_YEARS_AND_A_DAY = timedelta(days=5 * 365 + 2)


def _ingest(case: CaseContext) -> str:
    results = [
        case.pipeline.ingest(io.BytesIO(encode(ds)), case.origin)
        for ds in make_ct_series(2, rows=32, columns=32, seed=3)
    ]
    return results[0].study_id


def _advance(vault: Vault, delta: timedelta) -> None:
    clock = vault.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(delta)


class TestWhenTheJobsRun:
    @pytest.mark.parametrize(
        ("now", "expected"),
        [
            (datetime(2026, 3, 1, 1, 59, tzinfo=UTC), datetime(2026, 3, 1, 2, tzinfo=UTC)),
            (datetime(2026, 3, 1, 2, 0, tzinfo=UTC), datetime(2026, 3, 2, 2, tzinfo=UTC)),
            (datetime(2026, 3, 1, 23, 30, tzinfo=UTC), datetime(2026, 3, 2, 2, tzinfo=UTC)),
            (datetime(2026, 12, 31, 3, 0, tzinfo=UTC), datetime(2027, 1, 1, 2, tzinfo=UTC)),
        ],
    )
    def test_the_next_run_is_the_first_hour_strictly_after_now(
        self, now: datetime, expected: datetime
    ) -> None:
        assert next_run(now, 2) == expected

    def test_the_runner_runs_at_its_hour_then_waits_for_the_next_day(
        self, embedded_vault: Vault
    ) -> None:
        runner = DailyRunner(embedded_vault, hour_utc=2)
        due = runner.due
        assert runner.tick() is None  # not yet
        _advance(embedded_vault, due - embedded_vault.clock.now())
        ran = runner.tick()
        assert ran is not None and set(ran) == {"expire", "purge", "backup", "rotate"}
        assert runner.due == due + timedelta(days=1)
        assert runner.tick() is None  # once a day

    def test_the_runner_thread_outlives_a_job_that_breaks_unexpectedly(
        self, embedded_vault: Vault, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str] = []

        def broken(vault: Vault) -> int:
            calls.append("expire")
            raise RuntimeError("a bug, not a known failure")

        monkeypatch.setitem(DAILY_JOBS, "expire", broken)
        runner = DailyRunner(embedded_vault, hour_utc=2, poll_seconds=0.02)
        runner.due = embedded_vault.clock.now()  # due at once
        runner.start()
        try:
            deadline = time.monotonic() + 30
            while not calls and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
            assert calls == ["expire"]
            assert runner.is_alive()
            assert runner.due > embedded_vault.clock.now()  # tomorrow's run is set
        finally:
            runner.stop()

    def test_the_runner_thread_stops_when_told(self, embedded_vault: Vault) -> None:
        runner = DailyRunner(embedded_vault, hour_utc=2, poll_seconds=0.05)
        runner.start()
        runner.stop()
        assert not runner.is_alive()


class TestTheJobs:
    def test_one_run_expires_purges_and_backs_up(self, embedded_case: CaseContext) -> None:
        vault = embedded_case.vault
        study_id = _ingest(embedded_case)
        _advance(vault, FIVE_YEARS_AND_A_DAY)
        ran = run_daily_jobs(vault)
        assert ran["expire"] == 1
        assert ran["purge"] and ran["purge"] > 0  # the ingest's records, 5 years old
        assert ran["backup"] == 1
        with vault.catalog.session() as session:
            assert session.get(Study, study_id) is None
        assert len(list_backups(vault)) == 1

    def test_the_purge_forgets_login_counters_that_hold_nothing(
        self, embedded_vault: Vault
    ) -> None:
        vault = embedded_vault
        throttle = Throttle(vault.settings.auth, vault.clock)
        threshold = vault.settings.auth.lockout_threshold
        with vault.catalog.session() as session:  # counters whose window will be over
            throttle.attempt(session, account_key("ok@a.example"), address_key("192.0.2.1"))
            for _ in range(threshold):
                throttle.failure(session, account_key("was-locked@a.example"))
        _advance(vault, timedelta(minutes=vault.settings.auth.lockout_minutes + 1))
        with vault.catalog.session() as session:  # counters still holding something
            throttle.attempt(session, address_key("192.0.2.2"))
            for _ in range(threshold):
                throttle.failure(session, account_key("locked@a.example"))
        DAILY_JOBS["purge"](vault)
        with vault.catalog.session() as session:
            kept = set(session.scalars(select(LoginThrottle.key)))
        assert kept == {address_key("192.0.2.2"), account_key("locked@a.example")}

    def test_the_purge_deletes_abandoned_sessions_past_their_idle_or_absolute_time_out(
        self, vault: Vault
    ) -> None:
        auth = vault.settings.auth
        store = SessionStore(auth, vault.clock)
        with vault.catalog.session() as session:
            user = create_user(
                session, "staff@maker.example", "dpo", get_or_create_organisation(session, "Maker")
            )
            user_id = user.id
            started = {
                name: store.start(session, user_id, stage, "203.0.113.77")
                for name, stage in (("abandoned", "full"), ("busy", "full"), ("half-way", "totp"))
            }
        _advance(vault, timedelta(hours=auth.session_absolute_hours, minutes=1))
        with vault.catalog.session() as session:
            busy = store.lookup(session, started["busy"])
            assert busy is not None
            busy.last_seen_at = vault.clock.now()  # in use, but past its absolute limit
            live = store.start(session, user_id, "full", "203.0.113.78")
        DAILY_JOBS["purge"](vault)
        with vault.catalog.session() as session:
            kept = {(row.id, row.remote) for row in session.scalars(select(LoginSession))}
            assert kept == {(store.lookup(session, live).id, "203.0.113.78")}  # type: ignore[union-attr]

    def test_an_idle_session_is_purged_before_its_absolute_limit(
        self, embedded_vault: Vault
    ) -> None:
        vault = embedded_vault
        store = SessionStore(vault.settings.auth, vault.clock)
        with vault.catalog.session() as session:
            user = create_user(
                session, "idle@maker.example", "dpo", get_or_create_organisation(session, "Maker")
            )
            store.start(session, user.id, "full", "203.0.113.79")
        _advance(vault, timedelta(minutes=vault.settings.auth.session_idle_minutes - 1))
        DAILY_JOBS["purge"](vault)
        with vault.catalog.session() as session:
            assert len(list(session.scalars(select(LoginSession)))) == 1
        _advance(vault, timedelta(minutes=2))
        DAILY_JOBS["purge"](vault)
        with vault.catalog.session() as session:
            assert list(session.scalars(select(LoginSession))) == []

    def test_backups_past_their_rotation_go_even_when_the_vault_takes_none(
        self, tmp_path: Path
    ) -> None:
        settings = Settings(
            data_dir=tmp_path / "data", retention=RetentionSettings(backup_every_days=0)
        )
        vault = open_vault(settings, clock=FrozenClock())
        try:
            create_backup(vault)  # the operator's, or from before backups were switched off
            _advance(vault, timedelta(days=settings.retention.backup_retention_days + 1))
            ran = run_daily_jobs(vault)
            assert (ran["backup"], ran["rotate"]) == (0, 1)
            assert list_backups(vault) == []
        finally:
            vault.close()

    def test_a_backup_is_taken_once_a_day(self, embedded_vault: Vault) -> None:
        assert run_daily_jobs(embedded_vault)["backup"] == 1
        assert run_daily_jobs(embedded_vault)["backup"] == 0
        _advance(embedded_vault, timedelta(hours=23, minutes=30))  # the next day's run
        assert run_daily_jobs(embedded_vault)["backup"] == 1
        assert len(list_backups(embedded_vault)) == 2

    def test_backups_can_be_left_to_the_operator(self, tmp_path: Path) -> None:
        settings = Settings(
            data_dir=tmp_path / "data", retention=RetentionSettings(backup_every_days=0)
        )
        vault = open_vault(settings, clock=FrozenClock())
        try:
            assert run_daily_jobs(vault)["backup"] == 0
            assert list_backups(vault) == []
        finally:
            vault.close()

    def test_a_failing_job_does_not_stop_the_others(
        self,
        embedded_vault: Vault,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        def broken(vault: Vault) -> int:
            raise StorageUnavailable("the object store did not answer")

        monkeypatch.setitem(DAILY_JOBS, "expire", broken)
        with caplog.at_level(logging.INFO, logger="vault.daily_jobs"):
            ran = run_daily_jobs(embedded_vault)
        assert ran["expire"] is None
        assert ran["purge"] == 0 and ran["backup"] == 1
        messages = [record.getMessage() for record in caplog.records]
        assert "daily job expire failed, next run tomorrow: StorageUnavailable" in messages

    def test_the_celery_task_takes_the_backup_when_due(self, embedded_vault: Vault) -> None:
        app = create_celery_app(embedded_vault.settings, vault=embedded_vault)
        assert app.tasks[BACKUP_TASK].delay().get() == {"taken": 1}
        assert app.tasks[BACKUP_TASK].delay().get() == {"taken": 0}
