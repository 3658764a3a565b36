"""The C-STORE receiver with real peers: who may send, what is stored, what is refused.

Senders are Debian's dcmtk tools (``storescu``, ``echoscu``) and pynetdicom
SCUs; the receiver runs on the embedded vault (``receiver`` fixture).
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dsutils import create_file_meta
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import select

from dicom_ingest._scp_part10 import part10_prefix
from dicom_ingest._scp_reactor import FastAssociationSocket, WakingAssociation, WakingDUL
from dicom_ingest.synthetic import SyntheticPatient, encode, write_series
from tests.cstore_support import (
    associate,
    instance_count,
    run_storescu,
    send_partial_store,
    send_raw_store,
    small_series,
    store_message,
    studies,
    wait_until_closed,
)
from tests.services.dicom_peers import (
    Dcmtk,
    Receiver,
    nodelay_env,
    register_node,
    start_receiver,
)
from vault.admin import create_case, get_or_create_organisation, set_pacs_node_enabled
from vault.catalog.models import AuditEvent, Instance, Study
from vault.core import Vault
from vault.errors import (
    MissingAttribute,
    SopClassMismatch,
    dimse_status,
)
from vault.reader import open_instance
from vault.settings import ScpSettings

REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03
CALLED_AE_NOT_RECOGNISED = 0x07
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03


def association_events(receiver: Receiver) -> list[AuditEvent]:
    with receiver.vault.catalog.session() as session:
        query = select(AuditEvent).where(AuditEvent.action == "association")
        return list(session.scalars(query.order_by(AuditEvent.seq)))


def store_outcomes(receiver: Receiver) -> list[str]:
    with receiver.vault.catalog.session() as session:
        query = select(AuditEvent.outcome).where(AuditEvent.action == "instance.store")
        return list(session.scalars(query.order_by(AuditEvent.seq)))


class TestVerification:
    def test_echoscu_from_registered_node_succeeds(self, dcmtk: Dcmtk, receiver: Receiver) -> None:
        argv = [str(dcmtk.echoscu), "-aet", "PACS1", "-aec", receiver.ae_title]
        result = subprocess.run(
            [*argv, receiver.host, str(receiver.port)], capture_output=True, env=nodelay_env()
        )
        assert result.returncode == 0

    def test_echoscu_from_unknown_ae_is_rejected(self, dcmtk: Dcmtk, receiver: Receiver) -> None:
        argv = [str(dcmtk.echoscu), "-aet", "STRANGER", receiver.host, str(receiver.port)]
        result = subprocess.run(argv, capture_output=True, text=True)
        assert result.returncode != 0
        assert "Rejected" in result.stderr + result.stdout


class TestAdmission:
    def test_unknown_calling_ae_gets_a_associate_rj_reason_0x03(self, receiver: Receiver) -> None:
        assoc = associate(receiver, "STRANGER")
        assert assoc.is_rejected
        reply = assoc.acceptor.primitive
        assert (reply.result, reply.result_source, reply.diagnostic) == (
            REJECTED_PERMANENT,
            SERVICE_USER,
            CALLING_AE_NOT_RECOGNISED,
        )

    def test_an_association_for_another_ae_title_gets_reason_0x07_and_is_logged(
        self, receiver: Receiver
    ) -> None:
        ae = AE(ae_title="PACS1")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate(receiver.host, receiver.port, ae_title="OTHER-ARCHIVE")
        assert assoc.is_rejected
        reply = assoc.acceptor.primitive
        assert (reply.result, reply.result_source, reply.diagnostic) == (
            REJECTED_PERMANENT,
            SERVICE_USER,
            CALLED_AE_NOT_RECOGNISED,
        )
        assert [e.outcome for e in association_events(receiver)][-1] == "refused:called-ae-title"
        follow_up = associate(receiver)  # addressed to the vault's own title
        assert follow_up.is_established
        follow_up.release()

    def test_the_called_ae_title_check_can_be_turned_off(self, embedded_vault: Vault) -> None:
        settings = ScpSettings(port=0, settle_check_seconds=3600, require_called_ae_title=False)
        receiver = start_receiver(embedded_vault, settings)
        try:
            ae = AE(ae_title="PACS1")
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            assoc = ae.associate(receiver.host, receiver.port, ae_title="ANY-SCP")
            assert assoc.is_established
            assoc.release()
        finally:
            receiver.scp.stop()

    def test_disabled_node_is_rejected(self, receiver: Receiver) -> None:
        with receiver.vault.catalog.session() as session:
            set_pacs_node_enabled(session, "PACS1", False)
        assoc = associate(receiver)
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == CALLING_AE_NOT_RECOGNISED
        assert [e.outcome for e in association_events(receiver)][-1] == "refused:disabled-caller"

    def test_storescu_with_unknown_ae_stores_nothing(
        self, dcmtk: Dcmtk, receiver: Receiver, tmp_path: Path
    ) -> None:
        files = write_series(tmp_path / "in", small_series(2))
        result = run_storescu(dcmtk, receiver, files, ae_title="STRANGER")
        assert result.returncode != 0
        assert instance_count(receiver.vault) == 0

    def test_refusal_and_sessions_are_in_the_access_log_without_ae_title(
        self, receiver: Receiver
    ) -> None:
        associate(receiver, "STRANGER")
        good = associate(receiver)
        good.send_c_store(small_series(1)[0])
        good.release()
        wait_until_closed(receiver)
        events = association_events(receiver)
        outcomes = [(e.actor, e.outcome) for e in events]
        node = f"pacs:{receiver.node_id}"
        assert outcomes == [
            ("pacs:unknown", "refused:unknown-caller"),
            (node, "open"),
            (node, "closed"),
        ]
        assert '"stored":1' in events[-1].detail
        assert all("STRANGER" not in (e.detail + (e.remote or "")) for e in events)

    def test_peer_address_check_refuses_another_host(self, embedded_vault: Vault) -> None:
        running = start_receiver(
            embedded_vault, ScpSettings(port=0, check_peer_address=True, settle_check_seconds=3600)
        )
        try:
            register_node(embedded_vault, "FARAWAY", host="192.0.2.10")
            register_node(embedded_vault, "NEARBY", host="127.0.0.1")
            assert associate(running, "FARAWAY").is_rejected
            nearby = associate(running, "NEARBY")
            assert nearby.is_established
            nearby.release()
        finally:
            running.scp.stop()


class TestResend:
    def test_the_same_instance_resent_in_another_transfer_syntax_is_a_success(
        self, receiver: Receiver
    ) -> None:
        (instance,) = small_series(1, seed=41)
        explicit = associate(receiver)
        first = explicit.send_c_store(instance).Status
        explicit.release()
        ae = AE(ae_title="PACS1")
        ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
        implicit = ae.associate(receiver.host, receiver.port, ae_title=receiver.ae_title)
        instance.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        again = implicit.send_c_store(instance).Status
        implicit.release()
        assert (first, again) == (0x0000, 0x0000)
        assert instance_count(receiver.vault) == 1

    def test_another_instance_under_the_same_uid_fails_and_says_why(
        self, receiver: Receiver
    ) -> None:
        (instance,) = small_series(1, seed=42)
        assoc = associate(receiver)
        first = assoc.send_c_store(instance)
        instance.ImageComments = "another version"
        second = assoc.send_c_store(instance)
        assoc.release()
        assert (first.Status, second.Status) == (0x0000, 0xC000)
        assert second.ErrorComment == "another instance with this SOP Instance UID is stored"
        assert instance_count(receiver.vault) == 1


class TestStore:
    def test_storescu_series_is_stored_bit_exact(
        self, dcmtk: Dcmtk, receiver: Receiver, tmp_path: Path
    ) -> None:
        datasets = small_series(4)
        files = write_series(tmp_path / "in", datasets)
        result = run_storescu(dcmtk, receiver, files)
        assert result.returncode == 0, result.stderr
        with receiver.vault.catalog.session() as session:
            ids = list(session.scalars(select(Instance.id).order_by(Instance.instance_number)))
        stored = []
        for instance_id in ids:
            with open_instance(receiver.vault, instance_id) as stream:
                stored.append(stream.read())
        # storescu re-sends the data set; the receiver rebuilds the file meta,
        # so compare data set bytes (everything after the file meta).
        originals = [encode(ds) for ds in datasets]
        assert len(stored) == 4
        assert [s[s.index(b"\x08\x00\x05\x00") :] for s in stored] == [
            o[o.index(b"\x08\x00\x05\x00") :] for o in originals
        ]

    def test_pynetdicom_scu_gets_success_and_study_is_in_inbox(self, receiver: Receiver) -> None:
        assoc = associate(receiver)
        statuses = [assoc.send_c_store(ds).Status for ds in small_series(3)]
        assoc.release()
        assert statuses == [0x0000] * 3
        (study,) = studies(receiver.vault)
        assert study.case_id is None
        assert study.instance_count == 3
        assert study.organisation_id == receiver.organisation_id

    def test_accession_number_of_an_open_case_files_the_study_there(
        self, receiver: Receiver
    ) -> None:
        with receiver.vault.catalog.session() as session:
            org = get_or_create_organisation(session, "Test Hospital")
            case_id = create_case(session, "ACC-42", org).id
        datasets = small_series(2)
        for ds in datasets:
            ds.AccessionNumber = "ACC-42"
        assoc = associate(receiver)
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [0, 0]
        assoc.release()
        (study,) = studies(receiver.vault)
        assert study.case_id == case_id

    def test_case_of_another_organisation_is_not_used(self, receiver: Receiver) -> None:
        with receiver.vault.catalog.session() as session:
            other = get_or_create_organisation(session, "Other Hospital")
            create_case(session, "ACC-99", other)
        ds = small_series(1)[0]
        ds.AccessionNumber = "ACC-99"
        assoc = associate(receiver)
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        assert studies(receiver.vault)[0].case_id is None


class TestRefusedInstances:
    def test_malformed_data_set_gets_cannot_understand_and_nothing_stored(
        self, receiver: Receiver
    ) -> None:
        assoc = associate(receiver)
        request = store_message(CTImageStorage, generate_uid(), b"\x08\x00\x16\x00garbage!" * 7)
        status = send_raw_store(assoc, request)
        assoc.release()
        assert status == 0xC000
        assert instance_count(receiver.vault) == 0
        assert list(receiver.vault.store.iter_keys()) == []

    def test_data_set_not_matching_the_negotiated_sop_class_is_refused(
        self, receiver: Receiver
    ) -> None:
        ds = small_series(1)[0]
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        payload = encode(ds)
        dataset_bytes = payload[payload.index(b"\x08\x00\x05\x00") :]
        assoc = associate(receiver)
        status = send_raw_store(
            assoc, store_message(CTImageStorage, str(ds.SOPInstanceUID), dataset_bytes)
        )
        assoc.release()
        assert status == dimse_status(SopClassMismatch("mismatch")) == 0xA900
        assert instance_count(receiver.vault) == 0
        assert list(receiver.vault.store.iter_keys()) == []
        assert store_outcomes(receiver) == ["refused:sop-class-mismatch"]

    def test_a_refusal_says_why_in_the_error_comment_without_phi(self, receiver: Receiver) -> None:
        ds = small_series(1)[0]
        ds.PatientName = "Zyxwvut^Quorra"
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        payload = encode(ds)
        dataset_bytes = payload[payload.index(b"\x08\x00\x05\x00") :]
        assoc = associate(receiver)
        context = assoc._get_valid_context(CTImageStorage, "", "scu")
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        try:
            request = store_message(CTImageStorage, str(ds.SOPInstanceUID), dataset_bytes)
            assoc.dimse.send_msg(request, context.context_id)
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assoc.release()
        comment = str(response.ErrorComment)
        assert response.Status == 0xA900
        assert comment == "the data set is not of the SOP Class it was sent as"
        assert "Zyxwvut" not in comment and str(ds.SOPInstanceUID) not in comment

    def test_a_file_over_the_size_limit_fails_for_good_and_says_why(
        self, receiver: Receiver
    ) -> None:
        limits = receiver.vault.settings.limits
        saved, limits.max_file_bytes = limits.max_file_bytes, 1000
        try:
            assoc = associate(receiver)
            answer = assoc.send_c_store(small_series(1, seed=21)[0])
            assoc.release()
        finally:
            limits.max_file_bytes = saved
        # 0xC000, not 0xA700 "out of resources", which a PACS would retry forever
        assert answer.Status == 0xC000
        assert answer.ErrorComment == "the file is larger than this service accepts"
        assert instance_count(receiver.vault) == 0

    def test_sop_class_outside_policy_is_not_negotiated(self, receiver: Receiver) -> None:
        assoc = associate(receiver, "PACS1", CTImageStorage, SecondaryCaptureImageStorage)
        assert assoc.is_established
        rejected = {cx.abstract_syntax: cx.result for cx in assoc.rejected_contexts}
        accepted = [cx.abstract_syntax for cx in assoc.accepted_contexts]
        assoc.release()
        assert rejected == {SecondaryCaptureImageStorage: ABSTRACT_SYNTAX_NOT_SUPPORTED}
        assert accepted == [CTImageStorage]

    def test_receiver_keeps_serving_after_a_refusal(self, receiver: Receiver) -> None:
        assoc = associate(receiver)
        bad = send_raw_store(assoc, store_message(CTImageStorage, generate_uid(), b"\x00" * 40))
        good = assoc.send_c_store(small_series(1)[0]).Status
        assoc.release()
        assert (bad, good) == (dimse_status(MissingAttribute("uid")), 0x0000) == (0xA900, 0)
        assert instance_count(receiver.vault) == 1


class TestErasedStudy:
    def test_instance_of_a_crypto_shredded_study_is_refused_though_its_key_was_cached(
        self, receiver: Receiver
    ) -> None:
        first, second = small_series(2, seed=11)
        assoc = associate(receiver)
        stored = assoc.send_c_store(first).Status
        with receiver.vault.catalog.session() as session:
            key_id = session.scalar(select(Study.data_key_id))
            receiver.vault.keyring.destroy(key_id, session=session)
        objects = sorted(receiver.vault.store.iter_keys())
        refused = assoc.send_c_store(second).Status
        assoc.release()
        assert (stored, refused) == (0x0000, 0x0110)
        assert instance_count(receiver.vault) == 1
        assert sorted(receiver.vault.store.iter_keys()) == objects
        assert store_outcomes(receiver) == ["success", "refused:destroyed"]


class TestAbortedAssociation:
    def test_abort_mid_instance_stores_nothing_and_receiver_still_serves(
        self, receiver: Receiver
    ) -> None:
        big = next(iter(small_series(1, seed=7)))
        big.PixelData = bytes(512 * 512 * 2)
        big.Rows = big.Columns = 512
        payload = encode(big)
        dataset_bytes = payload[payload.index(b"\x08\x00\x05\x00") :]
        assoc = associate(receiver)
        send_partial_store(
            assoc, store_message(CTImageStorage, str(big.SOPInstanceUID), dataset_bytes)
        )
        assert assoc.is_aborted
        follow_up = associate(receiver)
        status = follow_up.send_c_store(small_series(1)[0]).Status
        follow_up.release()
        assert status == 0x0000
        assert instance_count(receiver.vault) == 1
        assert len(list(receiver.vault.store.iter_keys())) == 1


class TestPduLimits:
    def test_a_pdu_announced_huge_before_association_closes_the_connection(
        self, receiver: Receiver
    ) -> None:
        with socket.create_connection((receiver.host, receiver.port), timeout=30) as peer:
            # an A-ASSOCIATE-RQ header announcing 512 MiB, and 10 bytes of it
            peer.sendall(b"\x01\x00" + struct.pack(">L", 512 << 20) + bytes(10))
            assert peer.recv(1024) == b""  # closed, not waiting for 512 MiB
        follow_up = associate(receiver)
        status = follow_up.send_c_store(small_series(1)[0]).Status
        follow_up.release()
        assert status == 0x0000

    def test_a_p_data_pdu_over_the_announced_length_ends_the_association(
        self, receiver: Receiver
    ) -> None:
        big = next(iter(small_series(1, seed=8)))
        big.Rows = big.Columns = 2048
        big.PixelData = bytes(2048 * 2048 * 2)  # 8 MiB: one PDU over the 4 MiB announced
        payload = encode(big)
        dataset_bytes = payload[payload.index(b"\x08\x00\x05\x00") :]
        assoc = associate(receiver)
        context = assoc._get_valid_context(CTImageStorage, "", "scu")
        message = C_STORE_RQ()
        message.primitive_to_message(
            store_message(CTImageStorage, str(big.SOPInstanceUID), dataset_bytes)
        )
        for pdu in message.encode_msg(context.context_id, 16 << 20):
            assoc.dul.send_pdu(pdu)
        deadline = time.monotonic() + 30
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
        follow_up = associate(receiver)
        status = follow_up.send_c_store(small_series(1)[0]).Status
        follow_up.release()
        assert status == 0x0000
        assert instance_count(receiver.vault) == 1


class TestNothingSpooledToDisk:
    def test_received_data_sets_never_reach_the_temp_dir(
        self, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        spool = tmp_path / "tmp"
        spool.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(spool))
        assoc = associate(receiver)
        statuses = [assoc.send_c_store(ds).Status for ds in small_series(2)]
        assoc.release()
        assert statuses == [0, 0]
        assert pynetdicom_config.STORE_RECV_CHUNKED_DATASET is False
        assert list(spool.iterdir()) == []


class TestSockets:
    def test_accepted_socket_has_tcp_nodelay(self, receiver: Receiver) -> None:
        assoc = associate(receiver)
        server = receiver.scp.server
        assert server is not None
        (accepted,) = server.active_associations
        raw = accepted.dul.socket.socket
        nodelay = raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assoc.release()
        assert nodelay != 0

    def test_associations_run_on_the_event_driven_reactor(self, receiver: Receiver) -> None:
        assoc = associate(receiver)
        server = receiver.scp.server
        assert server is not None
        (accepted,) = server.active_associations
        kinds = (type(accepted), type(accepted.dul), type(accepted.dul.socket))
        assoc.release()
        assert kinds == (WakingAssociation, WakingDUL, FastAssociationSocket)

    def test_receiver_announces_the_configured_pdu_size(self, receiver: Receiver) -> None:
        assoc = associate(receiver)
        announced = assoc.acceptor.maximum_length
        assoc.release()
        assert announced == ScpSettings().max_pdu == 4 << 20

    def test_several_associations_store_at_once(self, receiver: Receiver) -> None:
        associations = [associate(receiver) for _ in range(3)]
        statuses = [
            assoc.send_c_store(ds).Status
            for seed, assoc in enumerate(associations)
            for ds in small_series(2, seed=seed + 20)
        ]
        for assoc in associations:
            assoc.release()
        assert statuses == [0] * 6
        assert len(studies(receiver.vault)) == 3


class TestFraming:
    @pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    @pytest.mark.parametrize("instance_uid", ["1.2.3.4.5", "1.2.3.4.56"])  # odd, even length
    def test_file_meta_is_the_bytes_pydicom_writes(
        self, transfer_syntax: str, instance_uid: str
    ) -> None:
        expected = io.BytesIO()
        expected.write(b"\x00" * 128 + b"DICM")
        meta = create_file_meta(
            sop_class_uid=CTImageStorage,
            sop_instance_uid=instance_uid,
            transfer_syntax=transfer_syntax,
        )
        write_file_meta_info(expected, meta, enforce_standard=True)
        assert part10_prefix(CTImageStorage, instance_uid, transfer_syntax) == expected.getvalue()


class TestNoPhiInLogs:
    def test_store_and_refusal_log_no_identifier(
        self,
        dcmtk: Dcmtk,
        receiver: Receiver,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Senders are external processes, so every record captured is the receiver's."""
        patient = SyntheticPatient()
        datasets = small_series(3, plant_phi=True)
        del datasets[2].PixelData  # refused: no pixel data
        files = write_series(tmp_path / "in", datasets)
        markers = [*patient.markers(), str(datasets[0].StudyInstanceUID)]
        markers += [str(ds.SOPInstanceUID) for ds in datasets]
        with caplog.at_level(logging.DEBUG):
            run_storescu(dcmtk, receiver, files)
            run_storescu(dcmtk, receiver, files[:1], ae_title="STRANGER")
            wait_until_closed(receiver)  # the closes' lines are checked too
        assert instance_count(receiver.vault) == 2
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "C-STORE refused: missing-attribute" in logged
        for marker in markers:
            assert marker not in logged

    def test_a_resend_is_logged_as_already_held(
        self,
        dcmtk: Dcmtk,
        receiver: Receiver,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        files = write_series(tmp_path / "in", small_series(2, seed=57))
        run_storescu(dcmtk, receiver, files)
        with caplog.at_level(logging.INFO):
            run_storescu(dcmtk, receiver, files)
            wait_until_closed(receiver)  # the close is logged after storescu is told
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "closed: 2 stored (2 already held), 0 refused" in logged


class TestEveryDeployment:
    def test_stored_instances_read_back_on_each_deployment(self, vault: Vault) -> None:
        running = start_receiver(vault)
        try:
            datasets = small_series(2, seed=31)
            assoc = associate(running)
            statuses = [assoc.send_c_store(ds).Status for ds in datasets]
            assoc.release()
        finally:
            running.scp.stop()
        assert statuses == [0, 0]
        with vault.catalog.session() as session:
            ids = list(session.scalars(select(Instance.id).order_by(Instance.instance_number)))
        read = []
        for instance_id in ids:
            with open_instance(vault, instance_id) as stream:
                read.append(stream.read())
        expected = [encode(ds) for ds in datasets]
        assert [r[r.index(b"\x08\x00\x05\x00") :] for r in read] == [
            e[e.index(b"\x08\x00\x05\x00") :] for e in expected
        ]
