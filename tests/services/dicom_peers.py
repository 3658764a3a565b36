"""Test plugin: real DICOM peers for the C-STORE receiver.

* ``dcmtk``: Debian's dcmtk tools (``/usr/bin/storescu``, ``echoscu``,
  ``storescp``), not the venv's pynetdicom scripts of the same names.
* ``tls_material``: a test CA, a server certificate for 127.0.0.1/localhost
  and a client certificate, generated once per session with ``cryptography``.
* ``orthanc``: Debian's Orthanc, started once per session from a generated
  JSON configuration on free ports in a temporary directory, stopped at the end.
* ``receiver``: a running :class:`~dicom_ingest.scp.StorageScp` on the
  embedded vault, with one registered PACS node (``PACS1``).

:func:`start_orthanc` and :func:`free_port` are also used by the benchmark.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dicom_ingest.scp import StorageScp
from tests.services._require import missing_service
from vault.admin import get_or_create_organisation, register_pacs_node
from vault.core import Vault
from vault.settings import ScpSettings
from vault.settle import StudySettledHooks

DCMTK_BIN = Path(os.environ.get("DICOM_VAULT_TEST_DCMTK", "/usr/bin"))
ORTHANC_BIN = Path(os.environ.get("DICOM_VAULT_TEST_ORTHANC", "/usr/sbin/Orthanc"))
PACS_AE = "PACS1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nodelay_env() -> dict[str, str]:
    """The environment for dcmtk tools: TCP_NODELAY=1 (dcmtk reads it)."""
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass(frozen=True)
class Dcmtk:
    storescu: Path
    echoscu: Path
    storescp: Path


@pytest.fixture(scope="session")
def dcmtk() -> Dcmtk:
    """Debian's dcmtk command-line tools."""
    tools = Dcmtk(*(DCMTK_BIN / name for name in ("storescu", "echoscu", "storescp")))
    for tool in (tools.storescu, tools.echoscu, tools.storescp):
        if not os.access(tool, os.X_OK):
            missing_service("dcmtk", f"{tool.name} not found in {DCMTK_BIN}")
    return tools


# --- TLS ----------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_sha256: str
    other_client_cert: Path
    other_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _save(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, base: Path) -> tuple[Path, Path]:
    cert_path, key_path = base.with_suffix(".pem"), base.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A test CA with a server certificate and two client certificates."""
    root = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = _issue("dicom-vault test CA", None)
    ca_path, _ = _save(ca_cert, ca_key, root / "ca")
    issuer = (ca_cert.subject, ca_key)
    server = _save(*_issue("localhost", issuer, server=True), root / "server")
    client_cert, client_key = _issue("pacs1", issuer)
    client = _save(client_cert, client_key, root / "client")
    other = _save(*_issue("someone-else", issuer), root / "other")
    fingerprint = hashlib.sha256(client_cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return TlsMaterial(ca_path, *server, *client, fingerprint, *other)


# --- Orthanc ------------------------------------------------------------


@dataclass(frozen=True)
class OrthancServer:
    dicom_port: int
    http_port: int
    aet: str
    storage: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _orthanc_config(root: Path, dicom_port: int, http_port: int) -> dict[str, object]:
    return {
        "Name": "dicom-vault-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "StorageCompression": False,
        "Plugins": [],
        "ConcurrentJobs": 1,
        "HttpServerEnabled": True,
    }


def _wait_http(url: str, process: subprocess.Popen[bytes], attempts: int = 200) -> None:
    for _ in range(attempts):
        if process.poll() is not None:
            raise RuntimeError("Orthanc exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/system", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError("Orthanc did not answer on its HTTP port")


def start_orthanc(root: Path) -> tuple[OrthancServer, subprocess.Popen[bytes]]:
    """Start Debian's Orthanc under ``root`` (TCP_NODELAY=1 in its environment).

    The caller stops the returned process (``terminate`` then ``wait``).
    """
    dicom_port, http_port = free_port(), free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "orthanc.json"
    config.write_text(json.dumps(_orthanc_config(root, dicom_port, http_port)))
    log = (root / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [str(ORTHANC_BIN), str(config)], stdout=log, stderr=subprocess.STDOUT, env=nodelay_env()
    )
    log.close()
    server = OrthancServer(dicom_port, http_port, "ORTHANC", root / "storage")
    try:
        _wait_http(server.url, process)
    except RuntimeError:
        stop_process(process)
        raise
    return server, process


READY_LINE = "DICOM receiver ready"


def wait_until_serving(process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Wait for ``dicom-vault scp`` (started with ``stdout=PIPE, text=True``) to
    say that every receiver process serves; its output is drained from then on.

    Raises:
        RuntimeError: it exited, or did not say so within ``timeout`` seconds.
    """
    serving = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(READY_LINE):
                serving.set()

    threading.Thread(target=drain, name="scp-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not serving.wait(0.1):
        if process.poll() is not None:
            raise RuntimeError("the receiver exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError("the receiver never said it was serving")


def receiver_processes(pid: int, port: int, count: int, timeout: float = 120.0) -> list[int]:
    """The pids of the ``count`` processes under ``pid`` listening on ``port``,
    once all of them are (``dicom-vault scp`` with ``scp.processes`` = ``count``
    answers C-ECHO as soon as its first process listens).

    Raises:
        RuntimeError: fewer than ``count`` listen after ``timeout`` seconds.
    """
    parent = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while True:
        listening = []
        for child in parent.children():
            try:
                connections = child.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
                listening.append(child.pid)
        if len(listening) >= count:
            return listening
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(listening)} of {count} receiver processes listen")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Debian's Orthanc, once per session."""
    if not os.access(ORTHANC_BIN, os.X_OK):
        missing_service("Orthanc", f"{ORTHANC_BIN} not found")
    root = tmp_path_factory.mktemp("orthanc")
    try:
        server, process = start_orthanc(root)
    except RuntimeError as exc:
        missing_service("Orthanc", str(exc))
    yield server
    stop_process(process)
    shutil.rmtree(root, ignore_errors=True)


# --- the receiver under test ----------------------------------------------


@dataclass
class Receiver:
    vault: Vault
    scp: StorageScp
    hooks: StudySettledHooks
    node_id: str
    organisation_id: str
    ae_title: str

    @property
    def host(self) -> str:
        return self.scp.address[0]

    @property
    def port(self) -> int:
        return self.scp.address[1]


def register_node(
    vault: Vault,
    ae_title: str = PACS_AE,
    *,
    organisation: str = "Test Hospital",
    host: str | None = None,
    cert_sha256: str | None = None,
) -> tuple[str, str]:
    """Register a PACS node; return (node id, organisation id)."""
    with vault.catalog.session() as session:
        org = get_or_create_organisation(session, organisation)
        node = register_pacs_node(session, ae_title, org, host=host, cert_sha256=cert_sha256)
        return node.id, org.id


def start_receiver(vault: Vault, settings: ScpSettings | None = None) -> Receiver:
    """A started receiver on a free port with node ``PACS1`` registered."""
    node_id, org_id = register_node(vault)
    hooks = StudySettledHooks()
    scp = StorageScp(
        vault,
        settings or ScpSettings(port=0, settle_check_seconds=3600),
        hooks=hooks,
    )
    scp.start()
    return Receiver(vault, scp, hooks, node_id, org_id, scp_title(settings))


def scp_title(settings: ScpSettings | None) -> str:
    return (settings or ScpSettings()).ae_title


@pytest.fixture
def receiver(embedded_vault: Vault) -> Iterator[Receiver]:
    """A running receiver on the embedded vault, node ``PACS1`` registered."""
    running = start_receiver(embedded_vault)
    yield running
    running.scp.stop()
