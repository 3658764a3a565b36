"""The exact access-log records each event of the DICOM C-STORE entry appends.

The HTTP routes have theirs in tests/test_audit_coverage.py; here each event
on a running receiver (``receiver`` fixture, node ``PACS1``) is diffed
against the access log: the rows appended, as (action, outcome, object_type),
with their actor, object and remote, and none carrying a planted PHI marker,
an original UID or the caller's AE title. The receiver writes an
association's close from its own thread after the release, so the rows are
read once that close is in the log.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, StorageCommitmentPushModel
from sqlalchemy import select

from dicom_ingest.commitment import COMMITMENT_INSTANCE_UID
from dicom_ingest.synthetic import SyntheticPatient, encode, write_series
from tests.cstore_support import run_storescu, send_raw_store, small_series, store_message
from tests.services.dicom_peers import Dcmtk, Receiver, free_port
from tests.test_cstore_commitment import ReportCatcher, request
from vault.catalog.models import Instance

CLOSE_WAIT_SECONDS = 60  # an upper bound for a hung receiver, not a timing check
STRANGER = "STRANGERAE"


@dataclass(frozen=True)
class Row:
    actor: str
    action: str
    outcome: str
    object_type: str | None
    object_id: str | None
    remote: str | None
    detail: dict[str, object]

    @property
    def recorded(self) -> tuple[str, str, str | None]:
        return (self.action, self.outcome, self.object_type)

    def text(self) -> str:
        fields = (self.actor, self.outcome, self.object_id or "", self.remote or "")
        return " ".join(fields) + json.dumps(self.detail)


def last_seq(receiver: Receiver) -> int:
    return max((e.seq for e in receiver.vault.audit.events()), default=0)


def rows_since(receiver: Receiver, seq: int) -> list[Row]:
    return [
        Row(
            e.actor, e.action, e.outcome, e.object_type, e.object_id, e.remote, json.loads(e.detail)
        )
        for e in receiver.vault.audit.events(since_seq=seq)
    ]


def rows_once_closed(receiver: Receiver, seq: int) -> list[Row]:
    """The rows since ``seq``, read once an association's close is among them."""
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    while time.monotonic() < deadline:
        rows = rows_since(receiver, seq)
        if any(r.action == "association" and r.outcome == "closed" for r in rows):
            return rows
        time.sleep(0.02)
    raise AssertionError("the receiver never logged the association's close")


def assert_no_phi(rows: list[Row], datasets: list[Dataset], patient: SyntheticPatient) -> None:
    logged = "\n".join(r.text() for r in rows).lower()
    uids = {str(ds.StudyInstanceUID) for ds in datasets} | {
        str(u) for ds in datasets for u in (ds.SeriesInstanceUID, ds.SOPInstanceUID)
    }
    for secret in [*patient.markers(), *uids, STRANGER]:
        assert secret.lower() not in logged, "a planted identifier reached the access log"


def scu(
    receiver: Receiver, port: int, ae_title: str = "PACS1", *, catcher: ReportCatcher | None = None
) -> Association:
    """A pynetdicom SCU bound to 127.0.0.1:``port`` (so its remote is known)."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StorageCommitmentPushModel)
    handlers = [(evt.EVT_N_EVENT_REPORT, catcher)] if catcher else []
    return ae.associate(
        receiver.host,
        receiver.port,
        ae_title=receiver.ae_title,
        bind_address=("127.0.0.1", port),
        evt_handlers=handlers,
    )


def assert_names_the_stored_instance(receiver: Receiver, row: Row) -> None:
    """The store row names the one catalogued instance: its id, study and size."""
    with receiver.vault.catalog.session() as session:
        (instance,) = session.scalars(select(Instance))
        stored = {"channel": "cstore", "study": instance.study_id, "bytes": instance.size}
        assert (row.object_id, row.detail) == (instance.id, stored)
    assert row.actor == f"pacs:{receiver.node_id}"


def phi_series(n: int, seed: int) -> list[Dataset]:
    return small_series(n, seed=seed, patient=SyntheticPatient(), plant_phi=True)


def session_rows(receiver: Receiver, remote: str, stored: int, refused: int) -> tuple[Row, Row]:
    """The open and close rows of an admitted association of node ``PACS1``."""
    node = receiver.node_id
    base = (f"pacs:{node}", "association")
    counts = {"tls": False, "stored": stored, "refused": refused}
    opened = Row(*base, "open", "pacs_node", node, remote, {"tls": False})
    return opened, Row(*base, "closed", "pacs_node", node, remote, counts)


class TestAssociationAcceptedAndReleased:
    def test_storescu_storing_one_instance_logs_open_store_close(
        self, dcmtk: Dcmtk, receiver: Receiver, tmp_path: Path
    ) -> None:
        datasets = phi_series(1, seed=41)
        files = write_series(tmp_path / "in", datasets)
        before = last_seq(receiver)
        assert run_storescu(dcmtk, receiver, files).returncode == 0
        rows = rows_once_closed(receiver, before)
        assert [r.recorded for r in rows] == [
            ("association", "open", "pacs_node"),
            ("instance.store", "success", "instance"),
            ("association", "closed", "pacs_node"),
        ]
        remote = rows[0].remote
        assert remote is not None and remote.startswith("127.0.0.1:")
        assert (rows[0], rows[2]) == session_rows(receiver, remote, stored=1, refused=0)
        assert rows[1].remote == remote
        assert_names_the_stored_instance(receiver, rows[1])
        assert_no_phi(rows, datasets, SyntheticPatient())


class TestAssociationRejected:
    def test_unknown_calling_ae_logs_one_refusal_without_its_title(
        self, receiver: Receiver
    ) -> None:
        port = free_port()
        before = last_seq(receiver)
        assoc = scu(receiver, port, STRANGER)
        assert assoc.is_rejected
        rows = rows_since(receiver, before)
        refusal = ("association", "refused:unknown-caller", None, None)
        assert rows == [Row("pacs:unknown", *refusal, f"127.0.0.1:{port}", {"tls": False})]
        assert_no_phi(rows, [], SyntheticPatient())


class TestDuplicateResend:
    def test_resend_of_the_same_bytes_logs_duplicate_of_the_same_instance(
        self, receiver: Receiver
    ) -> None:
        datasets = phi_series(1, seed=42)
        port = free_port()
        before = last_seq(receiver)
        assoc = scu(receiver, port)
        assert [assoc.send_c_store(datasets[0]).Status for _ in range(2)] == [0, 0]
        assoc.release()
        rows = rows_once_closed(receiver, before)
        assert [r.recorded for r in rows] == [
            ("association", "open", "pacs_node"),
            ("instance.store", "success", "instance"),
            ("instance.store", "duplicate", "instance"),
            ("association", "closed", "pacs_node"),
        ]
        remote = f"127.0.0.1:{port}"
        assert (rows[0], rows[3]) == session_rows(receiver, remote, stored=2, refused=0)
        assert_names_the_stored_instance(receiver, rows[1])
        assert_names_the_stored_instance(receiver, rows[2])
        assert {r.remote for r in rows} == {remote}
        assert {r.actor for r in rows} == {f"pacs:{receiver.node_id}"}
        assert_no_phi(rows, datasets, SyntheticPatient())


class TestRefusedByPolicy:
    def test_sop_class_outside_policy_is_refused_at_negotiation_and_not_logged(
        self, receiver: Receiver
    ) -> None:
        port = free_port()
        before = last_seq(receiver)
        assoc = scu(receiver, port)
        refused = [cx.abstract_syntax for cx in assoc.rejected_contexts]
        assoc.release()
        rows = rows_once_closed(receiver, before)
        assert refused == [SecondaryCaptureImageStorage]
        assert rows == list(session_rows(receiver, f"127.0.0.1:{port}", stored=0, refused=0))

    def test_instance_of_a_class_other_than_negotiated_logs_a_refusal_on_the_organisation(
        self, receiver: Receiver
    ) -> None:
        ds = phi_series(1, seed=43)[0]
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        payload = encode(ds)
        body = payload[payload.index(b"\x08\x00\x05\x00") :]
        port = free_port()
        before = last_seq(receiver)
        assoc = scu(receiver, port)
        message = store_message(CTImageStorage, str(ds.SOPInstanceUID), body)
        assert send_raw_store(assoc, message) == 0xA900
        assoc.release()
        rows = rows_once_closed(receiver, before)
        remote = f"127.0.0.1:{port}"
        opened, closed = session_rows(receiver, remote, stored=0, refused=1)
        refusal = ("instance.store", "refused:sop-class-mismatch", "organisation")
        org = receiver.organisation_id
        actor = f"pacs:{receiver.node_id}"
        refused = Row(actor, *refusal, org, remote, {"channel": "cstore"})
        assert rows == [opened, refused, closed]
        assert_no_phi(rows, [ds], SyntheticPatient())


class TestStorageCommitment:
    def test_commitment_answered_for_a_stored_instance_records_its_check(
        self, receiver: Receiver
    ) -> None:
        """The commitment check decrypts the instances it is asked about: it is logged."""
        datasets = phi_series(1, seed=44)
        port = free_port()
        catcher = ReportCatcher()
        before = last_seq(receiver)
        assoc = scu(receiver, port, catcher=catcher)
        assert assoc.send_c_store(datasets[0]).Status == 0
        asked = request(datasets)
        status, _ = assoc.send_n_action(
            asked, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
        )
        report = catcher.wait()
        assoc.release()
        rows = rows_once_closed(receiver, before)
        assert (status.Status, catcher.event_type) == (0x0000, 1)
        assert "FailedSOPSequence" not in report
        assert [r.recorded for r in rows] == [
            ("association", "open", "pacs_node"),
            ("instance.store", "success", "instance"),
            ("commitment.check", "success", "pacs_node"),
            ("association", "closed", "pacs_node"),
        ]
        remote = f"127.0.0.1:{port}"
        assert (rows[0], rows[3]) == session_rows(receiver, remote, stored=1, refused=0)
        check = rows[2]
        assert (check.actor, check.object_id, check.remote) == (
            rows[0].actor,
            rows[0].object_id,
            remote,
        )
        assert check.detail == {"committed": 1, "failed": 0, "studies": 1}
        assert_names_the_stored_instance(receiver, rows[1])
        assert_no_phi(rows, datasets, SyntheticPatient())
