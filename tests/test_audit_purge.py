"""The access log kept 12 months: purged behind a signed checkpoint, still verifiable.

The purge test runs on each deployment with each key provider (the
checkpoint's MAC key comes from the provider); tampering tests on the
embedded default. Time moves by a :class:`FrozenClock`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from vault.audit import GENESIS, AuditRecord, ChainBreak, ChainStart, chain_hash
from vault.audit_retention import purge_audit, verify_audit, write_checkpoint
from vault.catalog.models import AuditEvent
from vault.catalog.retention import AuditCheckpoint
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.settings import Settings

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def advance(vault: Vault, days: int) -> None:
    clock = vault.clock
    if not isinstance(clock, FrozenClock):
        raise TypeError("these tests need a FrozenClock")
    clock.advance(timedelta(days=days))


def log_some(vault: Vault, n: int, *, action: str = "instance.read") -> None:
    for i in range(n):
        vault.audit.record(AuditRecord("user:u1", action, object_type="study", object_id=str(i)))


def seqs_and_actions(vault: Vault) -> list[tuple[int, str]]:
    return [(e.seq, e.action) for e in vault.audit.events()]


def first_record(vault: Vault) -> AuditEvent:
    """The oldest record left (read whole: a half-read stream would expire it)."""
    (first, *_rest) = list(vault.audit.events())
    return first


def problems(vault: Vault) -> set[str]:
    return {b.problem for b in verify_audit(vault)}


@pytest.fixture(params=BACKENDS)
def each_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Vault]:
    """A vault on SQLite or PostgreSQL (local key file, frozen clock)."""
    settings = Settings(data_dir=tmp_path / "data")
    if request.param == "postgres":
        settings.catalog.url = request.getfixturevalue("postgres_url")
    opened = open_vault(settings, clock=FrozenClock())
    yield opened
    opened.close()


@pytest.fixture
def all_old(each_catalog: Vault) -> Vault:
    """Three records, then a purge a year and more later, when every record is past 12 months."""
    log_some(each_catalog, 3, action="old.read")
    advance(each_catalog, 400)
    purge_audit(each_catalog)
    return each_catalog


@pytest.fixture
def purged(embedded_vault: Vault) -> Vault:
    """An embedded vault whose first three records were purged at 12 months."""
    log_some(embedded_vault, 3, action="old.read")
    advance(embedded_vault, 200)
    log_some(embedded_vault, 2)
    advance(embedded_vault, 166)
    if purge_audit(embedded_vault) != 3:
        raise RuntimeError("the fixture's purge did not purge the three old records")
    return embedded_vault


class TestPurgeAtTwelveMonths:
    def test_records_are_purged_at_twelve_months_and_the_log_still_verifies(
        self, vault: Vault
    ) -> None:
        log_some(vault, 3, action="old.read")
        advance(vault, 200)
        log_some(vault, 2)
        advance(vault, 165)
        assert purge_audit(vault) == 0
        advance(vault, 1)
        assert purge_audit(vault) == 3
        remaining = [action for _, action in seqs_and_actions(vault)]
        assert "old.read" not in remaining
        assert remaining.count("instance.read") == 2
        assert verify_audit(vault) == []

    def test_the_chain_without_its_checkpoint_does_not_verify(self, purged: Vault) -> None:
        assert purged.audit.verify() != []
        assert verify_audit(purged) == []

    def test_purge_checkpoint_pins_the_last_purged_record(self, purged: Vault) -> None:
        with purged.catalog.session() as session:
            checkpoint = session.scalar(
                select(AuditCheckpoint).where(AuditCheckpoint.kind == "purge")
            )
        first = first_record(purged)
        assert checkpoint.seq == 3 == first.seq - 1
        assert checkpoint.hash == first.prev_hash

    def test_purge_is_recorded_and_repeating_it_purges_nothing(self, purged: Vault) -> None:
        assert purge_audit(purged) == 0
        purges = [e for e in purged.audit.events() if e.action == "audit.purge"]
        assert [json.loads(e.detail) for e in purges] == [
            {"purged": 3, "through": 3},
            {"purged": 0, "through": 0},
        ]
        assert verify_audit(purged) == []

    def test_a_second_purge_a_year_later_keeps_the_log_verifiable(self, purged: Vault) -> None:
        log_some(purged, 2)
        advance(purged, 366)
        assert purge_audit(purged) == 4  # 2 reads, the first purge, 1 read; the head stays
        assert verify_audit(purged) == []


class TestPurgeOfAnAllOldLog:
    """The daily job did not run for a year: every record is past its 12 months."""

    def test_the_chain_head_is_kept_and_the_log_goes_on_from_it(self, all_old: Vault) -> None:
        log_some(all_old, 1)
        assert seqs_and_actions(all_old) == [
            (3, "old.read"),
            (4, "audit.purge"),
            (5, "instance.read"),
        ]
        assert verify_audit(all_old) == []

    def test_the_kept_head_goes_at_the_next_purge(self, all_old: Vault) -> None:
        advance(all_old, 1)
        assert purge_audit(all_old) == 1
        assert "old.read" not in [action for _, action in seqs_and_actions(all_old)]
        assert verify_audit(all_old) == []

    def test_a_record_edited_after_the_purge_is_detected(self, all_old: Vault) -> None:
        log_some(all_old, 2)
        edited = seqs_and_actions(all_old)[-2][0]
        with all_old.catalog.session() as session:
            session.execute(
                update(AuditEvent).where(AuditEvent.seq == edited).values(actor="user:someone")
            )
        assert ChainBreak(edited, "record altered") in verify_audit(all_old)

    def test_a_chain_restarted_behind_the_purge_checkpoint_is_detected(self, purged: Vault) -> None:
        restarted = AuditEvent(
            seq=1,
            at=first_record(purged).at,
            actor="user:u1",
            action="instance.read",
            outcome="success",
            object_type=None,
            object_id="hidden",
            remote=None,
            detail="{}",
            prev_hash=GENESIS,
        )
        restarted.hash = chain_hash(GENESIS, restarted)
        with purged.catalog.session() as session:
            session.add(restarted)
        assert ChainBreak(1, "record numbered at or before the last purged record") in (
            verify_audit(purged)
        )


class TestTamperingAfterTheCheckpoint:
    def test_edited_record_is_detected(self, purged: Vault) -> None:
        first = first_record(purged).seq
        with purged.catalog.session() as session:
            session.execute(
                update(AuditEvent).where(AuditEvent.seq == first).values(actor="user:someone")
            )
        assert "record altered" in problems(purged)

    def test_rewritten_chain_before_a_checkpoint_is_detected(self, purged: Vault) -> None:
        log_some(purged, 2)
        write_checkpoint(purged)
        first = first_record(purged).seq
        with purged.catalog.session() as session:
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.seq >= first).order_by(AuditEvent.seq)
            ).all()
            events[0].actor = "user:someone"
            prev = events[0].prev_hash
            for event in events:
                event.prev_hash, event.hash = prev, chain_hash(prev, event)
                prev = event.hash
        start = ChainStart(first - 1, events[0].prev_hash)
        assert purged.audit.verify(start=start) == [], "the rewrite left the chain consistent"
        assert "record differs from its checkpoint" in problems(purged)

    def test_deleting_the_last_records_past_a_checkpoint_is_detected(self, purged: Vault) -> None:
        checkpoint = write_checkpoint(purged)
        log_some(purged, 2)
        assert verify_audit(purged) == []
        with purged.catalog.session() as session:
            session.execute(delete(AuditEvent).where(AuditEvent.seq >= checkpoint.seq - 1))
        assert "record pinned by a checkpoint is missing" in problems(purged)

    def test_forged_checkpoint_is_detected(self, purged: Vault) -> None:
        with purged.catalog.session() as session:
            session.execute(
                update(AuditCheckpoint)
                .where(AuditCheckpoint.kind == "purge")
                .values(seq=AuditCheckpoint.seq + 1)
            )
        assert "checkpoint signature invalid" in problems(purged)

    def test_deleted_purge_checkpoint_is_detected(self, purged: Vault) -> None:
        with purged.catalog.session() as session:
            session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.kind == "purge"))
        assert "does not follow the previous record" in problems(purged)


class TestPeriodicCheckpoint:
    def test_checkpoint_pins_the_record_of_its_own_writing(self, embedded_vault: Vault) -> None:
        log_some(embedded_vault, 2)
        checkpoint = write_checkpoint(embedded_vault, actor="cli")
        last_seq, last_action = seqs_and_actions(embedded_vault)[-1]
        assert (checkpoint.seq, checkpoint.kind) == (last_seq, "periodic")
        assert last_action == "audit.checkpoint"
        assert verify_audit(embedded_vault) == []
