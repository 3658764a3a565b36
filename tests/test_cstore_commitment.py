"""Storage commitment push model on the receiver, with a pynetdicom SCU as the PACS."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StorageCommitmentPushModel
from sqlalchemy import select, update

from dicom_ingest.commitment import (
    COMMITMENT_INSTANCE_UID,
    NO_SUCH_OBJECT_INSTANCE,
    PROCESSING_FAILURE,
)
from tests.cstore_support import associate, small_series
from tests.services.dicom_peers import Receiver, TlsMaterial, free_port, start_receiver
from vault.catalog.models import PacsNode, Study
from vault.core import Vault
from vault.settings import ScpSettings

REPORT_WAIT_SECONDS = 60  # an upper bound for a hung receiver, not a timing check


class ReportCatcher:
    """The SCU side's EVT_N_EVENT_REPORT handler: keeps the report."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.event_type: int | None = None
        self.report: Dataset | None = None

    def __call__(self, event: Any) -> tuple[int, None]:
        self.event_type = int(event.request.EventTypeID)
        self.report = event.event_information
        self.arrived.set()
        return 0x0000, None

    def wait(self) -> Dataset:
        assert self.arrived.wait(REPORT_WAIT_SECONDS), "no N-EVENT-REPORT arrived"
        assert self.report is not None
        return self.report


def request(datasets: list[Dataset], extra_uids: list[str] = ()) -> Dataset:  # type: ignore[assignment]
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for uid, sop_class in [(d.SOPInstanceUID, d.SOPClassUID) for d in datasets] + [
        (u, CTImageStorage) for u in extra_uids
    ]:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def commitment_scu(receiver: Receiver, catcher: ReportCatcher) -> Any:
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae.associate(
        receiver.host,
        receiver.port,
        ae_title=receiver.ae_title,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, catcher)],
    )


def uids(sequence: Any) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in sequence}


def _empty_list() -> tuple[Dataset, str]:
    asked = request([])
    return asked, COMMITMENT_INSTANCE_UID


def _no_list() -> tuple[Dataset, str]:
    asked = request([])
    del asked.ReferencedSOPSequence
    return asked, COMMITMENT_INSTANCE_UID


def _item_without_uid() -> tuple[Dataset, str]:
    asked = request(small_series(1, seed=31))
    del asked.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    return asked, COMMITMENT_INSTANCE_UID


def _another_instance() -> tuple[Dataset, str]:
    return request(small_series(1, seed=32)), "1.2.3.4"


BAD_REQUESTS = {
    "empty list": (_empty_list, 0x0121),
    "no list": (_no_list, 0x0120),
    "item without its instance UID": (_item_without_uid, 0x0121),
    "not the well-known instance": (_another_instance, 0x0117),
}


class TestRequestsThatCannotBeAnswered:
    @pytest.mark.parametrize("name", BAD_REQUESTS)
    def test_the_n_action_fails_and_no_report_claims_anything(
        self, receiver: Receiver, name: str
    ) -> None:
        make, expected = BAD_REQUESTS[name]
        asked, instance = make()
        catcher = ReportCatcher()
        assoc = commitment_scu(receiver, catcher)
        status, _reply = assoc.send_n_action(asked, 1, StorageCommitmentPushModel, instance)
        reported = catcher.arrived.wait(2)  # a report would follow the answer at once
        still = assoc.send_c_store(small_series(1, seed=33)[0]).Status
        assoc.release()
        assert status.Status == expected
        assert not reported
        assert still == 0x0000  # the association goes on


class TestCommitmentOnTheSameAssociation:
    def test_stored_instances_committed_unknown_one_failed(self, receiver: Receiver) -> None:
        datasets = small_series(2)
        unknown = str(generate_uid())
        catcher = ReportCatcher()
        assoc = commitment_scu(receiver, catcher)
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [0, 0]
        asked = request(datasets, [unknown])
        status, _reply = assoc.send_n_action(
            asked, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
        )
        report = catcher.wait()
        assoc.release()
        assert status.Status == 0x0000
        assert catcher.event_type == 2
        assert report.TransactionUID == asked.TransactionUID
        assert uids(report.ReferencedSOPSequence) == {str(d.SOPInstanceUID) for d in datasets}
        (failed,) = report.FailedSOPSequence
        assert (str(failed.ReferencedSOPInstanceUID), failed.FailureReason) == (
            unknown,
            NO_SUCH_OBJECT_INSTANCE,
        )

    def test_all_committed_gives_event_type_1_and_settles_study(self, receiver: Receiver) -> None:
        datasets = small_series(2, seed=5)
        catcher = ReportCatcher()
        settled: list[str] = []
        receiver.hooks.register(settled.append)
        assoc = commitment_scu(receiver, catcher)
        for ds in datasets:
            assoc.send_c_store(ds)
        assoc.send_n_action(
            request(datasets), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
        )
        report = catcher.wait()
        assoc.release()
        assert catcher.event_type == 1
        assert "FailedSOPSequence" not in report
        with receiver.vault.catalog.session() as session:
            study = session.scalar(select(Study))
            assert study is not None
            assert (study.state, settled) == ("settled", [study.id])

    def test_tampered_instance_is_not_committed(self, receiver: Receiver) -> None:
        ds = small_series(1, seed=6)[0]
        assoc = associate(receiver)
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        root = Path(str(receiver.vault.settings.store.filesystem.root))
        (stored,) = [p for p in root.rglob("*") if p.is_file()]
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01
        stored.write_bytes(bytes(data))
        catcher = ReportCatcher()
        scu = commitment_scu(receiver, catcher)
        scu.send_n_action(request([ds]), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
        report = catcher.wait()
        scu.release()
        assert catcher.event_type == 2
        assert [item.FailureReason for item in report.FailedSOPSequence] == [PROCESSING_FAILURE]


@pytest.fixture
def pacs_listener(receiver: Receiver) -> Iterator[tuple[ReportCatcher, int]]:
    """The PACS's own SCP, taking the report on a new association."""
    catcher = ReportCatcher()
    port = free_port()
    ae = AE(ae_title="PACS1")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, catcher)]
    )
    with receiver.vault.catalog.session() as session:
        session.execute(
            update(PacsNode).where(PacsNode.id == receiver.node_id).values(host=f"127.0.0.1:{port}")
        )
    yield catcher, port
    server.shutdown()


class TestCommitmentOnANewAssociation:
    def test_report_goes_to_the_node_when_the_scu_released(
        self, receiver: Receiver, pacs_listener: tuple[ReportCatcher, int]
    ) -> None:
        catcher, _port = pacs_listener
        ds = small_series(1, seed=8)[0]
        ae = AE(ae_title="PACS1")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(receiver.host, receiver.port, ae_title=receiver.ae_title)
        assoc.send_c_store(ds)
        assoc.send_n_action(request([ds]), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
        assoc.release()
        report = catcher.wait()
        assert catcher.event_type == 1
        assert uids(report.ReferencedSOPSequence) == {str(ds.SOPInstanceUID)}


class TestCommitmentReportOverTls:
    def test_a_tls_receiver_sends_the_report_to_the_pacs_over_tls(
        self, embedded_vault: Vault, tls_material: TlsMaterial
    ) -> None:
        settings = ScpSettings(
            port=0,
            tls_cert=tls_material.server_cert,
            tls_key=tls_material.server_key,
            tls_ca=tls_material.ca,
            settle_check_seconds=3600,
        )
        receiver = start_receiver(embedded_vault, settings)
        # the PACS's own SCP speaks TLS only, with a certificate of the same CA
        pacs_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        pacs_side.load_cert_chain(tls_material.server_cert, tls_material.server_key)
        catcher, port = ReportCatcher(), free_port()
        ae = AE(ae_title="PACS1")
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        server = ae.start_server(
            ("127.0.0.1", port),
            block=False,
            ssl_context=pacs_side,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, catcher)],
        )
        try:
            with embedded_vault.catalog.session() as session:
                session.execute(
                    update(PacsNode)
                    .where(PacsNode.id == receiver.node_id)
                    .values(host=f"127.0.0.1:{port}")
                )
            ds = small_series(1, seed=9)[0]
            client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_material.ca)
            client.load_cert_chain(tls_material.client_cert, tls_material.client_key)
            scu = AE(ae_title="PACS1")
            scu.add_requested_context(CTImageStorage)
            scu.add_requested_context(StorageCommitmentPushModel)
            assoc = scu.associate(
                receiver.host,
                receiver.port,
                ae_title=receiver.ae_title,
                tls_args=(client, "localhost"),
            )
            assert assoc.send_c_store(ds).Status == 0x0000
            asked = request([ds])
            assoc.send_n_action(asked, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
            assoc.release()
            report = catcher.wait()
        finally:
            server.shutdown()
            receiver.scp.stop()
        assert catcher.event_type == 1
        assert uids(report.ReferencedSOPSequence) == {str(ds.SOPInstanceUID)}
