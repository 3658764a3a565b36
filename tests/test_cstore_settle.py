"""Study completion (vault.settle): idle studies settle once, listeners are told."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from sqlalchemy import select

from dicom_ingest.synthetic import encode
from tests.cstore_support import small_series
from tests.services.vault_env import CaseContext
from vault.catalog.models import Study
from vault.clock import FrozenClock
from vault.errors import NotFound
from vault.settle import IdleSettler, StudySettledHooks, settle_idle_studies, settle_study

IDLE = timedelta(minutes=5)


def ingest_study(case: CaseContext, seed: int) -> str:
    results = [
        case.pipeline.ingest(io.BytesIO(encode(ds)), case.origin)
        for ds in small_series(2, seed=seed)
    ]
    return results[0].study_id


def clock_of(case: CaseContext) -> FrozenClock:
    clock = case.vault.clock
    assert isinstance(clock, FrozenClock)
    return clock


def study_row(case: CaseContext, study_id: str) -> Study:
    with case.vault.catalog.session() as session:
        row = session.scalar(select(Study).where(Study.id == study_id))
        assert row is not None
        return row


class TestIdleSettling:
    def test_study_younger_than_idle_time_keeps_receiving(self, embedded_case: CaseContext) -> None:
        study_id = ingest_study(embedded_case, 1)
        clock_of(embedded_case).advance(IDLE - timedelta(seconds=1))
        assert settle_idle_studies(embedded_case.vault, IDLE) == []
        assert study_row(embedded_case, study_id).state == "receiving"

    def test_idle_study_settles_once_with_settled_at(self, embedded_case: CaseContext) -> None:
        study_id = ingest_study(embedded_case, 1)
        clock = clock_of(embedded_case)
        clock.advance(IDLE + timedelta(seconds=1))
        heard: list[str] = []
        hooks = StudySettledHooks([heard.append])
        assert settle_idle_studies(embedded_case.vault, IDLE, hooks) == [study_id]
        assert settle_idle_studies(embedded_case.vault, IDLE, hooks) == []
        row = study_row(embedded_case, study_id)
        assert (row.state, row.settled_at) == ("settled", clock.now())
        assert heard == [study_id]

    def test_only_the_idle_one_of_two_studies_settles(self, embedded_case: CaseContext) -> None:
        old = ingest_study(embedded_case, 1)
        clock_of(embedded_case).advance(IDLE)
        new = ingest_study(embedded_case, 2)
        clock_of(embedded_case).advance(timedelta(seconds=1))
        assert settle_idle_studies(embedded_case.vault, IDLE) == [old]
        assert study_row(embedded_case, new).state == "receiving"

    def test_timer_thread_check_settles_idle_studies(self, embedded_case: CaseContext) -> None:
        study_id = ingest_study(embedded_case, 1)
        clock_of(embedded_case).advance(IDLE * 2)
        settler = IdleSettler(embedded_case.vault, idle=IDLE, interval=timedelta(hours=1))
        assert settler.run_once() == [study_id]


class TestExplicitSettling:
    def test_settle_study_marks_it_and_tells_listeners_once(
        self, embedded_case: CaseContext
    ) -> None:
        study_id = ingest_study(embedded_case, 3)
        heard: list[str] = []
        hooks = StudySettledHooks()
        hooks.register(heard.append)
        assert settle_study(embedded_case.vault, study_id, hooks) is True
        assert settle_study(embedded_case.vault, study_id, hooks) is False
        assert heard == [study_id]
        assert study_row(embedded_case, study_id).state == "settled"

    def test_unknown_study_is_not_found(self, embedded_case: CaseContext) -> None:
        with pytest.raises(NotFound):
            settle_study(embedded_case.vault, "0" * 32)

    def test_failing_listener_does_not_stop_the_next(self, embedded_case: CaseContext) -> None:
        study_id = ingest_study(embedded_case, 4)
        heard: list[str] = []

        def broken(_study_id: str) -> None:
            raise RuntimeError("listener broke")

        hooks = StudySettledHooks([broken, heard.append])
        settle_study(embedded_case.vault, study_id, hooks)
        assert heard == [study_id]
