"""Storage-commitment reports that cannot be delivered at once, and reused Transaction UIDs.

The PACS is a pynetdicom SCU (the requester) and a pynetdicom SCP (where the
report goes on a new association); its SCP being down is a port nobody
listens on. Time moves on the vault's :class:`~vault.clock.FrozenClock`, and
the retries are the receiver's settle-timer pass, called directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select, update

from dicom_ingest.commitment import COMMITMENT_INSTANCE_UID, DUPLICATE_TRANSACTION_UID
from dicom_ingest.commitment_retry import receiver_settler
from dicom_ingest.scp import StorageScp
from tests.cstore_support import small_series
from tests.services.dicom_peers import Receiver, free_port, start_receiver
from tests.test_cstore_commitment import ReportCatcher, commitment_scu, request, uids
from vault.catalog.commitments import CommitmentTransaction
from vault.catalog.models import AuditEvent, PacsNode
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.metrics import collect
from vault.settings import ScpSettings, Settings
from vault.settle import StudySettledHooks

WAIT_SECONDS = 60  # an upper bound for a hung receiver, not a timing check
RETRY = timedelta(seconds=60)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def scp_settings(**overrides: Any) -> ScpSettings:
    """The receiver's settings: reports always on a new association, 3 attempts."""
    values: dict[str, Any] = {
        "port": 0,
        "settle_check_seconds": 3600,  # the timer pass is called by the tests
        "commitment_report_new_association": True,
        "commitment_retry_seconds": RETRY.total_seconds(),
        "commitment_report_attempts": 3,
        "network_timeout_seconds": 10,
    }
    values.update(overrides)
    return ScpSettings(**values)


@dataclass
class Site:
    """A vault's settings and its frozen clock, so that a test can restart it."""

    settings: Settings
    clock: FrozenClock

    def open(self) -> Vault:
        return open_vault(self.settings, clock=self.clock)


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Site:
    settings = Settings(data_dir=tmp_path / "data")
    if request.param == "postgres":
        settings.catalog.url = request.getfixturevalue("postgres_url")
    return Site(settings, FrozenClock())


@pytest.fixture
def vault(site: Site) -> Iterator[Vault]:
    opened = site.open()
    yield opened
    opened.close()


@pytest.fixture
def receiver(vault: Vault) -> Iterator[Receiver]:
    running = start_receiver(vault, scp_settings())
    yield running
    running.scp.stop()


class PacsScp:
    """The PACS's own SCP on a fixed port, which a test starts late or never."""

    def __init__(self) -> None:
        self.port = free_port()
        self.catcher = ReportCatcher()
        self._server: Any = None

    def start(self) -> None:
        ae = AE(ae_title="PACS1")
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.catcher)],
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@pytest.fixture
def pacs(vault: Vault) -> Iterator[PacsScp]:
    """The PACS's SCP, down until a test starts it; the node's host points at it."""
    scp = PacsScp()
    with vault.catalog.session() as session:
        session.execute(update(PacsNode).values(host=f"127.0.0.1:{scp.port}"))
    yield scp
    scp.stop()


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "the receiver did not get there"
        time.sleep(0.05)


def rows(vault: Vault) -> list[CommitmentTransaction]:
    with vault.catalog.read_session() as session:
        return list(session.scalars(select(CommitmentTransaction)))


def attempted(vault: Vault, count: int) -> Callable[[], bool]:
    return lambda: [row.attempts for row in rows(vault)] == [count]


def ask(receiver: Receiver, asked: Dataset, stored: list[Dataset] = ()) -> int:  # type: ignore[assignment]
    """Store ``stored``, request commitment and release: the report must go elsewhere."""
    assoc = commitment_scu(receiver, ReportCatcher())
    for ds in stored:
        assert assoc.send_c_store(ds).Status == 0x0000
    status, _reply = assoc.send_n_action(
        asked, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
    )
    assoc.release()
    return int(status.Status)


def retry_pass(vault: Vault, hooks: StudySettledHooks) -> None:
    """One pass of the receiver's settle timer (which retries pending reports)."""
    receiver_settler(vault, scp_settings(), hooks).run_once()


class TestUndeliverableReportIsRetried:
    def test_the_report_arrives_once_the_pacs_listens_and_is_checked_again(
        self, vault: Vault, site: Site, receiver: Receiver, pacs: PacsScp
    ) -> None:
        first, late = small_series(2, seed=41)
        asked = request([first, late])
        assert ask(receiver, asked, [first]) == 0x0000
        wait_for(attempted(vault, 1))  # the PACS's SCP is down: the first attempt failed
        assert not pacs.catcher.arrived.is_set()

        assoc = commitment_scu(receiver, ReportCatcher())  # the late instance arrives
        assert assoc.send_c_store(late).Status == 0x0000
        assoc.release()
        pacs.start()
        retry_pass(vault, receiver.hooks)  # not due yet: the back-off holds it
        assert [row.attempts for row in rows(vault)] == [1]
        site.clock.advance(RETRY)
        retry_pass(vault, receiver.hooks)

        report = pacs.catcher.wait()
        assert pacs.catcher.event_type == 1
        assert report.TransactionUID == asked.TransactionUID
        assert uids(report.ReferencedSOPSequence) == {first.SOPInstanceUID, late.SOPInstanceUID}
        (row,) = rows(vault)
        assert (row.state, row.attempts, row.references_sealed) == ("reported", 2, None)

    def test_a_pending_report_survives_a_restart_of_the_receiver(
        self, vault: Vault, site: Site, receiver: Receiver, pacs: PacsScp
    ) -> None:
        ds = small_series(1, seed=42)[0]
        asked = request([ds])
        assert ask(receiver, asked, [ds]) == 0x0000
        wait_for(attempted(vault, 1))
        receiver.scp.stop()
        vault.close()

        reopened = site.open()
        try:
            pacs.start()
            site.clock.advance(RETRY)
            hooks = StudySettledHooks()
            with StorageScp(reopened, scp_settings(), hooks=hooks):  # the next receiver
                retry_pass(reopened, hooks)
            report = pacs.catcher.wait()
            assert report.TransactionUID == asked.TransactionUID
            assert uids(report.ReferencedSOPSequence) == {ds.SOPInstanceUID}
            assert [row.state for row in rows(reopened)] == ["reported"]
        finally:
            reopened.close()

    def test_a_report_that_keeps_failing_is_given_up_without_phi_in_the_log(
        self,
        vault: Vault,
        site: Site,
        receiver: Receiver,
        pacs: PacsScp,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO)
        ds = small_series(1, seed=43)[0]
        asked = request([ds])
        assert ask(receiver, asked, [ds]) == 0x0000
        wait_for(attempted(vault, 1))
        for _ in range(2):  # attempts 2 and 3 of 3, the PACS's SCP still down
            site.clock.advance(timedelta(hours=1))
            retry_pass(vault, receiver.hooks)

        (row,) = rows(vault)
        assert (row.state, row.attempts, row.references_sealed) == ("given-up", 3, None)
        site.clock.advance(timedelta(hours=1))
        retry_pass(vault, receiver.hooks)
        assert not pacs.catcher.arrived.is_set()
        ours = [r for r in caplog.records if r.name.startswith(("dicom_ingest", "vault"))]
        assert any("given up after 3 attempt" in r.getMessage() for r in ours)
        phi = (str(ds.SOPInstanceUID), str(asked.TransactionUID), str(ds.StudyInstanceUID))
        assert not [r for r in ours if any(value in r.getMessage() for value in phi)]
        with vault.catalog.read_session() as session:
            actions = list(session.scalars(select(AuditEvent.action)))
        assert actions.count("commitment.give-up") == 1
        (family,) = [f for f in collect(vault) if f.name == "commitment_reports"]
        counts = {dict(s.labels)["state"]: s.value for s in family.samples}
        assert counts == {"pending": 0, "reported": 0, "given-up": 1}

    def test_the_catalog_keeps_no_uid_in_clear(
        self, vault: Vault, receiver: Receiver, pacs: PacsScp
    ) -> None:
        ds = small_series(1, seed=44)[0]
        asked = request([ds])
        assert ask(receiver, asked, [ds]) == 0x0000
        wait_for(attempted(vault, 1))
        (row,) = rows(vault)
        stored = repr([getattr(row, c.key) for c in CommitmentTransaction.__table__.columns])
        for value in (ds.SOPInstanceUID, asked.TransactionUID):
            assert str(value) not in stored
            assert str(value).encode() not in (row.references_sealed or b"")


class TestReusedTransactionUid:
    def test_an_identical_repeat_is_answered_and_reported_again(self, vault: Vault) -> None:
        receiver = start_receiver(vault, scp_settings(commitment_report_new_association=False))
        try:
            ds = small_series(1, seed=45)[0]
            asked = request([ds])
            reports = [self._ask_on_open_association(receiver, asked, [ds]) for _ in range(2)]
        finally:
            receiver.scp.stop()
        for status, event_type, report in reports:
            assert (status, event_type) == (0x0000, 1)
            assert uids(report.ReferencedSOPSequence) == {ds.SOPInstanceUID}
        assert [(row.state, row.attempts) for row in rows(vault)] == [("reported", 1)]

    def test_other_references_under_a_known_uid_fail_as_duplicate(
        self, vault: Vault, receiver: Receiver, pacs: PacsScp
    ) -> None:
        first, other = small_series(2, seed=46)
        asked = request([first])
        assert ask(receiver, asked, [first, other]) == 0x0000
        wait_for(attempted(vault, 1))  # pending: the PACS's SCP is down
        reuse = request([other])
        reuse.TransactionUID = asked.TransactionUID
        pacs.start()
        status, event_type, report = self._ask_on_open_association(
            receiver, reuse, [], new_association=pacs
        )
        assert (status, event_type) == (0x0000, 2)
        assert "ReferencedSOPSequence" not in report
        assert [
            (item.ReferencedSOPInstanceUID, item.FailureReason) for item in report.FailedSOPSequence
        ] == [(other.SOPInstanceUID, DUPLICATE_TRANSACTION_UID)]
        (row,) = rows(vault)  # the first transaction is untouched, still to report
        assert (row.state, row.attempts) == ("pending", 1)

    @staticmethod
    def _ask_on_open_association(
        receiver: Receiver,
        asked: Dataset,
        stored: list[Dataset],
        new_association: PacsScp | None = None,
    ) -> tuple[int, int | None, Dataset]:
        catcher = new_association.catcher if new_association else ReportCatcher()
        if new_association is None:
            assoc = commitment_scu(receiver, catcher)
        else:
            assoc = commitment_scu(receiver, ReportCatcher())
        for ds in stored:
            assert assoc.send_c_store(ds).Status == 0x0000
        status, _reply = assoc.send_n_action(
            asked, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
        )
        report = catcher.wait()
        assoc.release()
        return int(status.Status), catcher.event_type, report
