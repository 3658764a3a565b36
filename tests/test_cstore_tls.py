"""DICOM TLS (PS3.15 Annex B) on the receiver, with dcmtk storescu as the peer."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage

from dicom_ingest.synthetic import write_series
from tests.cstore_support import (
    held_connections,
    instance_count,
    receivers_on_one_socket,
    run_storescu,
    small_series,
)
from tests.services.dicom_peers import (
    Dcmtk,
    Receiver,
    TlsMaterial,
    register_node,
    start_receiver,
)
from vault.core import Vault
from vault.settings import ScpSettings


def tls_settings(tls: TlsMaterial, *, require_client_cert: bool) -> ScpSettings:
    return ScpSettings(
        port=0,
        tls_cert=tls.server_cert,
        tls_key=tls.server_key,
        tls_ca=tls.ca,
        require_client_cert=require_client_cert,
        settle_check_seconds=3600,
    )


@pytest.fixture
def tls_receiver(embedded_vault: Vault, tls_material: TlsMaterial) -> Iterator[Receiver]:
    running = start_receiver(embedded_vault, tls_settings(tls_material, require_client_cert=False))
    yield running
    running.scp.stop()


def with_cert(tls: TlsMaterial, cert: Path | None = None, key: Path | None = None) -> list[str]:
    return ["+tls", str(key or tls.client_key), str(cert or tls.client_cert), "+cf", str(tls.ca)]


def anonymous(tls: TlsMaterial) -> list[str]:
    return ["+tla", "+cf", str(tls.ca)]


class TestTlsTransport:
    def test_store_over_tls_with_client_certificate(
        self, dcmtk: Dcmtk, tls_receiver: Receiver, tls_material: TlsMaterial, tmp_path: Path
    ) -> None:
        files = write_series(tmp_path / "in", small_series(2))
        result = run_storescu(dcmtk, tls_receiver, files, tls=with_cert(tls_material))
        assert result.returncode == 0, result.stderr
        assert instance_count(tls_receiver.vault) == 2

    def test_store_over_tls_without_client_certificate(
        self, dcmtk: Dcmtk, tls_receiver: Receiver, tls_material: TlsMaterial, tmp_path: Path
    ) -> None:
        files = write_series(tmp_path / "in", small_series(2))
        result = run_storescu(dcmtk, tls_receiver, files, tls=anonymous(tls_material))
        assert result.returncode == 0, result.stderr
        assert instance_count(tls_receiver.vault) == 2

    def test_plain_tcp_to_tls_port_stores_nothing(
        self, dcmtk: Dcmtk, tls_receiver: Receiver, tmp_path: Path
    ) -> None:
        files = write_series(tmp_path / "in", small_series(1))
        result = run_storescu(dcmtk, tls_receiver, files)
        assert result.returncode != 0
        assert instance_count(tls_receiver.vault) == 0

    def test_context_refuses_tls_below_1_2(self, tls_material: TlsMaterial) -> None:
        from dicom_ingest._scp_transport import server_tls_context

        context = server_tls_context(tls_settings(tls_material, require_client_cert=True))
        assert context is not None
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED


class TestMutualTls:
    def test_required_client_certificate_refuses_anonymous_client(
        self, dcmtk: Dcmtk, embedded_vault: Vault, tls_material: TlsMaterial, tmp_path: Path
    ) -> None:
        running = start_receiver(
            embedded_vault, tls_settings(tls_material, require_client_cert=True)
        )
        try:
            files = write_series(tmp_path / "in", small_series(1))
            refused = run_storescu(dcmtk, running, files, tls=anonymous(tls_material))
            accepted = run_storescu(dcmtk, running, files, tls=with_cert(tls_material))
        finally:
            running.scp.stop()
        assert refused.returncode != 0
        assert accepted.returncode == 0, accepted.stderr
        assert instance_count(embedded_vault) == 1

    def test_node_pinned_to_a_certificate_refuses_any_other(
        self, dcmtk: Dcmtk, tls_receiver: Receiver, tls_material: TlsMaterial, tmp_path: Path
    ) -> None:
        register_node(tls_receiver.vault, "PINNED", cert_sha256=tls_material.client_sha256)
        files = write_series(tmp_path / "in", small_series(1))
        other = with_cert(
            tls_material, tls_material.other_client_cert, tls_material.other_client_key
        )
        wrong = run_storescu(dcmtk, tls_receiver, files, ae_title="PINNED", tls=other)
        none = run_storescu(
            dcmtk, tls_receiver, files, ae_title="PINNED", tls=anonymous(tls_material)
        )
        assert instance_count(tls_receiver.vault) == 0
        right = run_storescu(
            dcmtk, tls_receiver, files, ae_title="PINNED", tls=with_cert(tls_material)
        )
        assert (wrong.returncode != 0, none.returncode != 0) == (True, True)
        assert right.returncode == 0, right.stderr
        assert instance_count(tls_receiver.vault) == 1


class TestTlsOnASharedSocket:
    def test_receiver_processes_sharing_one_socket_each_speak_tls(
        self, embedded_vault: Vault, tls_material: TlsMaterial
    ) -> None:
        register_node(embedded_vault)
        settings = tls_settings(tls_material, require_client_cert=False)
        opened: list[Association] = []
        with receivers_on_one_socket(embedded_vault, settings) as (port, scps):
            try:
                opened = [_tls_association(port, tls_material) for _ in range(2)]
                held = held_connections(scps)
                statuses = [
                    assoc.send_c_store(ds).Status
                    for n, assoc in enumerate(opened)
                    for ds in small_series(1, seed=50 + n)
                ]
            finally:
                for assoc in opened:
                    assoc.release()
        assert held == [1, 1]
        assert statuses == [0, 0]
        assert instance_count(embedded_vault) == 2


def _tls_association(port: int, tls: TlsMaterial) -> Association:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    context.check_hostname = False
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT", tls_args=(context, None))
    assert assoc.is_established
    return assoc
