"""Forwarding the access log to a syslog collector over TLS, as IHE ATNA does.

A real TLS listener in the test (``ssl`` on a socket, certificates made with
``cryptography``: a CA, the collector's certificate for 127.0.0.1, a client
certificate) receives RFC 5425 octet-counted frames and parses the RFC 5424
messages; each carries a DICOM Audit Message that validates against the
shipped schema. A collector that is down, or that the vault cannot trust,
never stops ingest: what could not be sent is counted and recorded in the
log itself (``audit.forward-drop``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree
from typer.testing import CliRunner

from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.audit import AuditRecord
from vault.audit_forward import AuditForwarder
from vault.audit_retention import verify_audit
from vault.audit_syslog import octet_frame, syslog_message
from vault.cli import app
from vault.core import Vault
from vault.schemas import DICOM_AUDIT_MESSAGE_RNG

CLI = Path(sys.executable).with_name("dicom-vault")
SCHEMA = etree.RelaxNG(etree.parse(str(DICOM_AUDIT_MESSAGE_RNG)))
WAIT = 60.0  # a safety net against a hang, never a measure of speed
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+)"
    r" (?P<msgid>\S+) (?P<sd>-) \ufeff(?P<msg>.*)$",
    re.DOTALL,
)


# --- certificates --------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: str, key, issuer: str, issuer_key, *, ca: bool = False, **ext
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    for extension in ext.values():
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key) -> tuple[Path, Path]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path.with_suffix(".crt"), path.with_suffix(".key")


def make_pki(directory: Path, ca_name: str = "Test ATNA CA") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    ca_path, _ = _write(directory / "ca", ca_cert, ca_key)
    server_key, client_key = _key(), _key()
    san = x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))])
    server = _cert(
        "collector",
        server_key,
        ca_name,
        ca_key,
        san=san,
        eku=x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
    )
    client = _cert(
        "dicom-vault",
        client_key,
        ca_name,
        ca_key,
        eku=x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
    )
    server_cert, server_key_path = _write(directory / "server", server, server_key)
    client_cert, client_key_path = _write(directory / "client", client, client_key)
    return Pki(ca_path, server_cert, server_key_path, client_cert, client_key_path)


# --- the collector -------------------------------------------------------


def read_frames(stream: ssl.SSLSocket) -> Iterator[bytes]:
    """RFC 5425 octet-counted frames from ``stream`` until it closes."""
    buffer = b""
    while True:
        while b" " not in buffer:
            chunk = stream.recv(65536)
            if not chunk:
                return
            buffer += chunk
        length, _, buffer = buffer.partition(b" ")
        size = int(length)
        while len(buffer) < size:
            chunk = stream.recv(65536)
            if not chunk:
                return
            buffer += chunk
        yield buffer[:size]
        buffer = buffer[size:]


class Collector:
    """A TLS syslog listener on 127.0.0.1 that requires a client certificate."""

    def __init__(self, pki: Pki, port: int = 0) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        self.context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.messages: queue.Queue[bytes] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._receive, args=(raw,), daemon=True).start()

    def _receive(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as stream:
                for frame in read_frames(stream):
                    self.messages.put(frame)
        except OSError:  # a refused handshake or a dropped connection: nothing received
            return

    def next_message(self) -> re.Match[str]:
        frame = self.messages.get(timeout=WAIT)
        parsed = RFC5424.match(frame.decode("utf-8"))
        assert parsed is not None, frame[:120]
        return parsed

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def collector(pki: Pki) -> Iterator[Collector]:
    server = Collector(pki)
    yield server
    server.close()


def configure(vault: Vault, pki: Pki, port: int, **overrides: object) -> None:
    syslog = vault.settings.audit.syslog
    syslog.host, syslog.port, syslog.ca_file = "127.0.0.1", port, pki.ca
    syslog.client_cert, syslog.client_key = pki.client_cert, pki.client_key
    syslog.poll_seconds = 0.05
    for name, value in overrides.items():
        setattr(syslog, name, value)


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def audit_record_seq(message: str) -> int:
    root = etree.fromstring(message)
    for item in root.findall("ParticipantObjectIdentification"):
        if item.find("ParticipantObjectIDTypeCode").get("csd-code") == "audit-record":
            return int(item.get("ParticipantObjectID"))
    raise AssertionError("no audit-record object")


def wait_until(condition: Callable[[], bool]) -> None:
    """Return once ``condition`` holds; fail after WAIT seconds (a hang, not slowness)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the forwarder never got there"
        time.sleep(0.05)


def drop_records(vault: Vault) -> list[dict[str, int]]:
    return [json.loads(e.detail) for e in vault.audit.events() if e.action == "audit.forward-drop"]


# --- tests ---------------------------------------------------------------


class TestFraming:
    def test_message_is_rfc5424_with_octet_counting(self) -> None:
        at = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
        message = syslog_message(
            "<AuditMessage/>",
            indicator="4",
            at=at,
            hostname="vault host",
            app_name="dv",
            procid="7",
        )
        frame = octet_frame(message)
        length, _, rest = frame.partition(b" ")
        assert int(length) == len(rest) == len(message)
        parsed = RFC5424.match(rest.decode())
        assert parsed is not None
        assert parsed["pri"] == "84"  # facility 10 (security), severity 4 (minor failure)
        assert (parsed["ts"], parsed["host"]) == ("2026-05-04T03:02:01.123456Z", "vaulthost")
        assert (parsed["msgid"], parsed["msg"]) == ("IHE+RFC-3881", "<AuditMessage/>")


class TestForwarding:
    def test_records_arrive_over_mutual_tls_in_order_and_validate(
        self, embedded_vault: Vault, pki: Pki, collector: Collector
    ) -> None:
        configure(embedded_vault, pki, collector.port)
        forwarder = AuditForwarder(embedded_vault)
        forwarder.start()
        try:
            embedded_vault.audit.record(AuditRecord("user:u1", "auth.login", remote="10.0.0.4"))
            embedded_vault.audit.record(
                AuditRecord("user:u1", "auth.login", "failure-password", remote="10.0.0.4")
            )
            embedded_vault.audit.record(
                AuditRecord("cli", "study.export", object_type="study", object_id="ab" * 16)
            )
            received = [collector.next_message() for _ in range(3)]
        finally:
            stats = forwarder.stop()
        assert [m["pri"] for m in received] == ["85", "84", "85"]
        assert {m["msgid"] for m in received} == {"IHE+RFC-3881"}
        messages = [m["msg"] for m in received]
        assert [SCHEMA.validate(etree.fromstring(m)) for m in messages] == [True] * 3
        assert [audit_record_seq(m) for m in messages] == [1, 2, 3]
        assert (stats.sent, stats.dropped) == (3, 0)
        assert drop_records(embedded_vault) == []

    def test_untrusted_collector_gets_nothing_and_the_loss_is_recorded(
        self, embedded_vault: Vault, tmp_path: Path, collector: Collector
    ) -> None:
        stranger = make_pki(tmp_path / "other", ca_name="Some Other CA")
        configure(embedded_vault, stranger, collector.port)
        forwarder = AuditForwarder(embedded_vault)
        forwarder.start()
        embedded_vault.audit.record(AuditRecord("user:u1", "auth.login"))
        wait_until(lambda: forwarder.stats.connect_failures > 0)
        stats = forwarder.stop(timeout=0.1)
        assert collector.messages.empty()
        assert (stats.sent, stats.dropped) == (0, 1)
        assert drop_records(embedded_vault) == [{"dropped": 1, "first": 1, "last": 1}]
        assert verify_audit(embedded_vault) == []


class TestNeverInTheWay:
    def test_ingest_goes_on_while_the_collector_is_down_and_drops_are_recorded(
        self, embedded_case: CaseContext, pki: Pki
    ) -> None:
        vault = embedded_case.vault
        configure(vault, pki, closed_port(), queue_size=2)
        forwarder = AuditForwarder(vault)
        forwarder.start()
        try:
            stored = [
                embedded_case.pipeline.ingest(io.BytesIO(encode(ds)), embedded_case.origin)
                for ds in make_ct_series(5, rows=16, columns=16, seed=4)
            ]
            wait_until(lambda: forwarder.stats.cursor >= 5)
        finally:
            stats = forwarder.stop(timeout=0.1)
        assert len({r.instance_id for r in stored}) == 5
        assert stats.sent == 0
        assert stats.dropped == 5
        assert stats.connect_failures >= 1
        recorded = drop_records(vault)
        assert sum(d["dropped"] for d in recorded) == 5
        assert min(d["first"] for d in recorded) == 1
        assert max(d["last"] for d in recorded) == 5
        assert verify_audit(vault) == []

    def test_full_queue_drops_instead_of_waiting(self, embedded_vault: Vault, pki: Pki) -> None:
        configure(embedded_vault, pki, closed_port(), queue_size=2)
        forwarder = AuditForwarder(embedded_vault)  # not started: nothing sends
        for i in range(5):
            embedded_vault.audit.record(AuditRecord("user:u1", "case.read", object_id=str(i)))
        assert forwarder.poll() == 5
        assert (forwarder.stats.dropped, forwarder.stats.cursor) == (3, 5)
        assert drop_records(embedded_vault) == []  # recorded once the queue has room
        forwarder.stop()
        assert drop_records(embedded_vault) == [{"dropped": 5, "first": 1, "last": 5}]


class TestOperationalLog:
    def test_an_outage_is_logged_once_and_the_recovery_too(
        self, embedded_vault: Vault, pki: Pki, caplog: pytest.LogCaptureFixture
    ) -> None:
        port = closed_port()
        configure(embedded_vault, pki, port)
        forwarder = AuditForwarder(embedded_vault)
        caplog.set_level(logging.INFO, logger="vault.audit_forward")
        forwarder.start()
        try:
            embedded_vault.audit.record(AuditRecord("user:u1", "auth.login"))
            wait_until(lambda: forwarder.stats.connect_failures >= 2)
            collector = Collector(pki, port)
            try:
                wait_until(lambda: forwarder.stats.sent == 1)
                assert audit_record_seq(collector.next_message().group("msg")) == 1
            finally:
                collector.close()
        finally:
            forwarder.stop(timeout=0.1)
        lines = [r.getMessage() for r in caplog.records if r.name == "vault.audit_forward"]
        down = [line for line in lines if "unreachable" in line]
        assert down == [
            f"audit forward: collector 127.0.0.1:{port} unreachable (ConnectionRefusedError);"
            " retrying every 30 s at most, records wait in the queue (10000) and past it are"
            " dropped and recorded"
        ]
        assert any(f"collector 127.0.0.1:{port} takes records again" in line for line in lines)

    def test_dropped_records_are_logged_with_their_range(
        self, embedded_vault: Vault, pki: Pki, caplog: pytest.LogCaptureFixture
    ) -> None:
        configure(embedded_vault, pki, closed_port(), queue_size=2)
        forwarder = AuditForwarder(embedded_vault)  # not started: nothing sends
        for i in range(5):
            embedded_vault.audit.record(AuditRecord("user:u1", "case.read", object_id=str(i)))
        caplog.set_level(logging.WARNING, logger="vault.audit_forward")
        forwarder.poll()
        forwarder.stop()
        assert [r.getMessage() for r in caplog.records] == [
            "audit forward: 5 records not forwarded (seq 1 to 5); recorded as"
            " audit.forward-drop, fill the gap from dicom-vault audit export"
        ]


class TestForwardCommand:
    def test_dicom_vault_audit_forward_sends_until_terminated(
        self, embedded_vault: Vault, pki: Pki, collector: Collector
    ) -> None:
        embedded_vault.audit.record(AuditRecord("cli", "case.create", object_id="c1"))
        env = {
            **os.environ,
            "DICOM_VAULT_DATA_DIR": str(embedded_vault.settings.data_dir),
            "DICOM_VAULT_AUDIT__SYSLOG__HOST": "127.0.0.1",
            "DICOM_VAULT_AUDIT__SYSLOG__PORT": str(collector.port),
            "DICOM_VAULT_AUDIT__SYSLOG__CA_FILE": str(pki.ca),
            "DICOM_VAULT_AUDIT__SYSLOG__CLIENT_CERT": str(pki.client_cert),
            "DICOM_VAULT_AUDIT__SYSLOG__CLIENT_KEY": str(pki.client_key),
        }
        process = subprocess.Popen(
            [str(CLI), "audit", "forward", "--from-seq", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            message = collector.next_message()
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=WAIT)
        assert audit_record_seq(message["msg"]) == 1
        assert process.returncode == 0, err
        assert out.strip() == "forwarded 1, dropped 0"

    def test_forward_refuses_to_start_without_a_collector(self, embedded_vault: Vault) -> None:
        env = {"DICOM_VAULT_DATA_DIR": str(embedded_vault.settings.data_dir)}
        result = CliRunner().invoke(app, ["audit", "forward"], env=env)
        assert result.exit_code == 2
        assert "audit.syslog.host is not set" in result.output
