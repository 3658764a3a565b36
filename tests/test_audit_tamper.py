"""`dicom-vault audit verify` catches each kind of tampering, on SQLite and PostgreSQL.

Someone with write access to the catalog (but not to the key provider) edits,
deletes, inserts, reorders or cuts off access-log records, or rewrites the
chain with every hash recomputed, or forges a checkpoint. Each time the CLI
exits 1 and names the record where the log stops holding; an untouched log
verifies. The log: records 1-6, a signed checkpoint pinning record 7 (its
own ``audit.checkpoint``), then records 8-9.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from vault import audit_verify
from vault.audit import GENESIS, AuditLog, AuditRecord, ChainBreak, chain_hash
from vault.audit_retention import checkpoint_gaps, verify_audit, write_checkpoint
from vault.audit_verify import _rows, digest, verify_chain
from vault.catalog.models import AuditEvent
from vault.catalog.retention import AuditCheckpoint
from vault.cli import app
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.settings import Settings

CLI = Path(sys.executable).with_name("dicom-vault")
CHECKPOINTED = 7
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def cli_env(vault: Vault) -> dict[str, str]:
    return {
        "DICOM_VAULT_DATA_DIR": str(vault.settings.data_dir),
        "DICOM_VAULT_CATALOG__URL": vault.settings.catalog.url or "",
    }


@pytest.fixture(params=BACKENDS)
def logged(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Vault]:
    """A vault on one backend with the nine-record log of the module docstring."""
    settings = Settings(data_dir=tmp_path / "data")
    if request.param == "postgres":
        settings.catalog.url = request.getfixturevalue("postgres_url")
    vault = open_vault(settings)
    for i in range(6):
        vault.audit.record(AuditRecord("user:u1", "instance.read", object_id=str(i)))
    checkpoint = write_checkpoint(vault)
    assert checkpoint is not None and checkpoint.seq == CHECKPOINTED
    for i in range(2):
        vault.audit.record(AuditRecord("user:u2", "study.download", object_id=str(i)))
    yield vault
    vault.close()


def verify(vault: Vault) -> tuple[int, list[str]]:
    """Run ``dicom-vault audit verify`` on ``vault``: exit code and output lines."""
    result = CliRunner().invoke(app, ["audit", "verify"], env=cli_env(vault))
    return result.exit_code, result.output.splitlines()


def renumber(session: Session, above: int, shift: int) -> None:
    """Move records after ``above`` by ``shift`` (through negatives: seq is the key)."""
    session.execute(update(AuditEvent).where(AuditEvent.seq > above).values(seq=-AuditEvent.seq))
    session.execute(
        update(AuditEvent).where(AuditEvent.seq < 0).values(seq=-AuditEvent.seq + shift)
    )


def edit(session: Session) -> None:
    session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="user:someone"))


def delete_one(session: Session) -> None:
    session.execute(delete(AuditEvent).where(AuditEvent.seq == 3))


def insert_forged(session: Session) -> None:
    """A forged record 4 chained to record 3, the later ones renumbered after it."""
    third = session.get(AuditEvent, 3)
    renumber(session, 3, 1)
    forged = AuditEvent(
        seq=4,
        at=third.at,
        actor="user:u1",
        action="instance.read",
        outcome="success",
        object_type=None,
        object_id="forged",
        remote=None,
        detail="{}",
        prev_hash=third.hash,
    )
    forged.hash = chain_hash(third.hash, forged)
    values = {c.name: getattr(forged, c.name) for c in AuditEvent.__table__.columns}
    session.execute(insert(AuditEvent), [values])


def reorder(session: Session) -> None:
    """Swap records 4 and 5."""
    session.execute(
        update(AuditEvent).where(AuditEvent.seq.in_([4, 5])).values(seq=-AuditEvent.seq)
    )
    session.execute(update(AuditEvent).where(AuditEvent.seq == -4).values(seq=5))
    session.execute(update(AuditEvent).where(AuditEvent.seq == -5).values(seq=4))


def truncate_tail(session: Session) -> None:
    """Cut the log back to before the checkpointed record."""
    session.execute(delete(AuditEvent).where(AuditEvent.seq >= CHECKPOINTED))


def rewrite_chain(session: Session) -> None:
    """Edit record 2 and recompute every hash after it: a consistent chain."""
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    events[1].actor = "user:someone"
    prev = events[0].hash
    for event in events[1:]:
        event.prev_hash, event.hash = prev, chain_hash(prev, event)
        prev = event.hash


def forge_checkpoint(session: Session) -> None:
    """Move the checkpoint to pin record 5 with record 5's hash (no key to re-sign)."""
    fifth = session.get(AuditEvent, 5)
    session.execute(update(AuditCheckpoint).values(seq=5, hash=fifth.hash))


TAMPERING: list[tuple[Callable[[Session], None], str]] = [
    (edit, "record 3: record altered"),
    (delete_one, "record 4: gap in sequence"),
    (insert_forged, "record 5: does not follow the previous record"),
    (reorder, "record 4: does not follow the previous record"),
    (truncate_tail, f"record {CHECKPOINTED}: record pinned by a checkpoint is missing"),
    (rewrite_chain, f"record {CHECKPOINTED}: record differs from its checkpoint"),
    (forge_checkpoint, "record 5: checkpoint signature invalid"),
]


class TestVerifyCli:
    def test_an_untouched_log_verifies(self, logged: Vault) -> None:
        assert verify(logged) == (0, ["access log intact"])

    @pytest.mark.parametrize(
        ("tamper", "expected"), TAMPERING, ids=[t.__name__ for t, _ in TAMPERING]
    )
    def test_tampering_is_detected_and_located(
        self, logged: Vault, tamper: Callable[[Session], None], expected: str
    ) -> None:
        with logged.catalog.session() as session:
            tamper(session)
        code, lines = verify(logged)
        assert code == 1
        assert expected in lines

    def test_the_installed_command_exits_1_on_a_tampered_log(self, logged: Vault) -> None:
        with logged.catalog.session() as session:
            truncate_tail(session)
        done = subprocess.run(
            [str(CLI), "audit", "verify"],
            env={**os.environ, **cli_env(logged)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1
        assert f"record {CHECKPOINTED}: record pinned by a checkpoint is missing" in done.stdout


def rehash(session: Session) -> None:
    """Recompute every record's hash in order: the chain is consistent again."""
    prev = GENESIS
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all():
        event.prev_hash, event.hash = prev, chain_hash(prev, event)
        prev = event.hash


def cut_out(session: Session, *seqs: int) -> None:
    """Delete records ``seqs``, renumber the later ones and re-chain the log: no gap, no break."""
    for seq in sorted(seqs, reverse=True):
        session.execute(delete(AuditEvent).where(AuditEvent.seq == seq))
        renumber(session, seq, -1)
    session.flush()
    rehash(session)


class TestCheckpointsCannotBeDropped:
    """The reviewer's attack: delete a record a signed checkpoint covered, re-chain
    the log with every hash recomputed, and drop the checkpoints that pinned it."""

    def test_dropping_the_checkpoint_of_a_rechained_log_is_detected(self, logged: Vault) -> None:
        with logged.catalog.session() as session:
            cut_out(session, 3)
            session.execute(delete(AuditCheckpoint))
        assert logged.audit.verify() == [], "the rewrite left the chain consistent"
        code, lines = verify(logged)
        assert code == 1
        announced = CHECKPOINTED - 1  # the audit.checkpoint record, renumbered
        assert f"record {announced}: the checkpoint this record announces is missing" in lines

    def test_dropping_a_checkpoint_between_two_others_is_detected(self, logged: Vault) -> None:
        write_checkpoint(logged)
        write_checkpoint(logged)
        with logged.catalog.session() as session:
            session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.number == 2))
        code, lines = verify(logged)
        assert code == 1
        assert "record 11: a checkpoint before this record's checkpoint is missing" in lines


@pytest.fixture(params=BACKENDS)
def daily(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Vault]:
    """A vault on one backend whose clock only moves when told, checkpointed on day 0."""
    settings = Settings(data_dir=tmp_path / "data")
    if request.param == "postgres":
        settings.catalog.url = request.getfixturevalue("postgres_url")
    vault = open_vault(settings, clock=FrozenClock(datetime(2026, 3, 2, 2, tzinfo=UTC)))
    vault.audit.record(AuditRecord("user:u1", "instance.read", object_id="day-0"))
    write_checkpoint(vault)
    yield vault
    vault.close()


def next_day(vault: Vault, hours: int = 24) -> None:
    clock = vault.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(hours=hours))


class TestCheckpointsAreDaily:
    def test_a_log_checkpointed_every_day_verifies(self, daily: Vault) -> None:
        for day in range(1, 4):
            next_day(daily)
            daily.audit.record(AuditRecord("user:u1", "instance.read", object_id=f"day-{day}"))
            write_checkpoint(daily)
        next_day(daily, 30)
        assert verify_audit(daily) == []
        assert checkpoint_gaps(daily) == []

    def test_a_newest_checkpoint_older_than_a_day_and_a_half_is_reported(
        self, daily: Vault
    ) -> None:
        next_day(daily, 37)
        stale = ChainBreak(2, "newest checkpoint is more than 36 hours old")
        assert stale in checkpoint_gaps(daily)
        assert verify_audit(daily) == []  # a stopped vault looks the same: a warning only

    def test_the_command_warns_of_a_gap_and_still_finds_the_log_intact(self, daily: Vault) -> None:
        code, lines = verify(daily)  # the command's clock is the real one, months later
        assert code == 0 and lines[-1] == "access log intact"
        assert any(line.startswith("warning: record 2: newest checkpoint") for line in lines)

    def test_dropping_the_newest_checkpoint_with_its_records_shows_at_the_next_one(
        self, daily: Vault
    ) -> None:
        next_day(daily)
        daily.audit.record(AuditRecord("user:mallory", "study.download", object_id="victim"))
        write_checkpoint(daily)
        with daily.catalog.session() as session:
            cut_out(session, 3, 4)  # mallory's record and the checkpoint announcing it
            session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.number == 2))
        next_day(daily)
        write_checkpoint(daily)  # the next daily checkpoint follows day 0's
        gap = ChainBreak(3, "no checkpoint for more than 36 hours before")
        assert gap in checkpoint_gaps(daily)


class TestFastWalk:
    """verify_audit walks raw rows (vault.audit_verify); it must judge as AuditLog.verify."""

    def add_awkward_records(self, vault: Vault) -> None:
        whole_second = FrozenClock(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        log = AuditLog(vault.catalog, whole_second)
        log.record(AuditRecord('user:"quoted"\\slash', "case.read", object_id="é☃\u2028"))
        log.record(AuditRecord("cli", "audit.export", remote=None, detail={"q": 'a"b\nc'}))

    def test_raw_digests_equal_the_logs_own_hashes(self, logged: Vault) -> None:
        self.add_awkward_records(logged)
        with logged.catalog.read_session() as session:
            rows = list(_rows(session.connection(), 0))
        assert len(rows) == CHECKPOINTED + 4
        assert [digest(row) for row in rows] == [row[10] for row in rows]
        assert verify_audit(logged) == []

    def test_fast_and_full_walks_find_the_same_breaks(self, logged: Vault) -> None:
        self.add_awkward_records(logged)
        with logged.catalog.session() as session:
            edit(session)
            session.execute(delete(AuditEvent).where(AuditEvent.seq == 5))
        fast = verify_chain(logged.catalog, logged.audit, None)
        assert fast == logged.audit.verify()
        assert {b.problem for b in fast} >= {"record altered", "gap in sequence"}

    def test_a_changed_canonical_form_falls_back_to_the_full_walk(
        self, logged: Vault, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(audit_verify, "digest", lambda row: "0" * 64)  # fault injection
        assert verify_audit(logged) == []
        with logged.catalog.session() as session:
            edit(session)
        assert ChainBreak(3, "record altered") in verify_audit(logged)
