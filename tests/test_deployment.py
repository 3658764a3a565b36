"""The deployment kit in ``infra/deploy``: it describes a vault that really runs.

- The example configurations load into the settings object, which refuses
  any key it does not know, so a misspelt example fails here.
- The systemd units pass ``systemd-analyze verify`` without a warning, and
  each one starts a ``dicom-vault`` command that exists with those options.
- The nginx site file passes ``nginx -t`` and, in front of a running vault,
  streams an upload without writing it to nginx's own temporary files: the
  body is held half-sent while nginx's body directory is looked at, then
  finished and stored; the access log names the caller's address, not the
  proxy's. A 20 MB archive downloaded by a slow reader waits in the vault,
  not in nginx's files.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from dicom_ingest.synthetic import encode, make_ct_series
from tests.engineer_support import assign, engineer_world, ingest, pseudonymise, serving
from tests.services._require import missing_service
from tests.services.dicom_peers import TlsMaterial, free_port, stop_process, tls_material
from tests.services.vault_env import make_case, without_vault_settings
from tests.services.vault_server import clinician_session, wait_until_healthy
from vault.auth.sessions import csrf_token
from vault.core import open_vault
from vault.settings import Settings, load_settings

__all__ = ["tls_material"]

DEPLOY = Path(__file__).resolve().parents[1] / "infra" / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
CLI = Path(sys.executable).with_name("dicom-vault")
INSTALLED_CLI = "/opt/dicom-vault/venv/bin/dicom-vault"


# No setting of the environment running the tests leaks into these.
pytestmark = pytest.mark.usefixtures("no_vault_settings")


class TestExampleConfigurations:
    def test_the_clinic_example_is_the_embedded_default_with_dicom_tls(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DICOM_VAULT_CONFIG", str(DEPLOY / "clinic.toml"))
        settings = load_settings()
        assert settings.catalog.url == "sqlite:////srv/dicom-vault/catalog.sqlite3"
        assert (settings.store.kind, settings.keys.provider) == ("filesystem", "local")
        assert settings.scp.tls_cert is not None and settings.scp.require_client_cert
        assert settings.celery.broker_url is None  # serve runs the daily jobs itself

    def test_the_scale_out_example_names_every_external_service(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DICOM_VAULT_CONFIG", str(DEPLOY / "scale-out.toml"))
        settings = load_settings()
        assert settings.catalog.url and settings.catalog.url.startswith("postgresql+psycopg://")
        assert (settings.store.kind, settings.store.s3.object_lock) == ("s3", True)
        assert settings.keys.provider == "pkcs11"
        assert settings.celery.broker_url and settings.celery.broker_url.startswith("amqp://")
        assert settings.audit.syslog.host == "siem.internal"


def _exec_start(unit: Path) -> list[str]:
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


class TestSystemdUnits:
    def test_there_is_a_unit_for_each_long_running_command(self) -> None:
        commands = {" ".join(_exec_start(unit)[1:]) for unit in UNITS}
        assert commands == {
            "serve",
            "serve --no-scp",
            "scp",
            "worker",
            "worker --beat --concurrency 1",
            "audit forward",
        }

    @pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
    def test_each_unit_starts_a_command_that_exists(self, unit: Path) -> None:
        program, *arguments = _exec_start(unit)
        assert program == INSTALLED_CLI
        done = subprocess.run(
            [str(CLI), *arguments, "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr

    def test_the_units_verify_without_a_warning(self, tmp_path: Path) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            missing_service("systemd-analyze", "systemd's tools are not installed")
        copies = []
        for unit in [*UNITS, DEPLOY / "systemd" / "dicom-vault.target"]:
            copy = tmp_path / unit.name
            copy.write_text(unit.read_text().replace(INSTALLED_CLI, str(CLI)))
            copies.append(str(copy))
        done = subprocess.run(
            [str(analyze), "verify", "--man=no", *copies],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode, done.stderr) == (0, "")

    @pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
    def test_each_unit_runs_with_least_privilege(self, unit: Path) -> None:
        lines = set(unit.read_text().splitlines())
        for needed in (
            "User=dicom-vault",
            "UMask=0077",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/srv/dicom-vault",
            "CapabilityBoundingSet=",
            "Environment=DICOM_VAULT_CONFIG=/etc/dicom-vault/vault.toml",
        ):
            assert needed in lines, needed


# ---- nginx in front -------------------------------------------------------------


@dataclass
class Proxy:
    port: int
    root: Path  # nginx's temporary directories are below
    upstream: int
    pid: int


def _files_open_under(pid: int, directory: Path) -> list[str]:
    """Files under ``directory`` that nginx (``pid`` and its workers) holds open.

    nginx unlinks a body's temporary file as soon as it creates it, so the
    directory looks empty while the bytes sit on disk: only the open files
    (``... (deleted)``) tell.
    """
    master = psutil.Process(pid)
    found = []
    for process in [master, *master.children()]:
        for fd in Path(f"/proc/{process.pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith(str(directory)):
                found.append(target)
    return found


def _site(tls: TlsMaterial, root: Path, https: int, http: int, upstream: int) -> str:
    site = (DEPLOY / "nginx" / "dicom-vault.conf").read_text()
    replacements = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http};",
        "/etc/ssl/dicom-vault/fullchain.pem": str(tls.server_cert),
        "/etc/ssl/dicom-vault/privkey.pem": str(tls.server_key),
        "/var/log/nginx/dicom-vault.access.log": str(root / "access.log"),
    }
    for old, new in replacements.items():
        assert old in site, old
        site = site.replace(old, new)
    return re.sub(r"^\s*listen \[::\]:\d+.*$", "", site, flags=re.M)


def _nginx_conf(root: Path, site: Path) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {root / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
user root;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"};
events {{}}
http {{
{temp}
    include {site};
}}
"""


@contextmanager
def _nginx(root: Path, tls: TlsMaterial, upstream: int) -> Iterator[Proxy]:
    """The shipped site in front of ``upstream``, on a free port, its files under ``root``."""
    nginx = shutil.which("nginx", path=f"/usr/sbin:{os.environ.get('PATH', '')}")
    if nginx is None:
        missing_service("nginx", "Debian's nginx is not installed (infra/install-system-deps.sh)")
    root.mkdir()
    https, http = free_port(), free_port()
    site = root / "site.conf"
    site.write_text(_site(tls, root, https, http, upstream))
    conf = root / "nginx.conf"
    conf.write_text(_nginx_conf(root, site))
    checked = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([nginx, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        yield Proxy(https, root, upstream, process.pid)
    finally:
        stop_process(process)  # type: ignore[arg-type]


@pytest.fixture
def proxy(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[Proxy]:
    with _nginx(tmp_path / "nginx", tls_material, free_port()) as started:
        yield started


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    headers: dict[str, str]
    case_id: str
    data: Path


@pytest.fixture
def vault_behind(proxy: Proxy, tmp_path: Path) -> Iterator[Served]:
    data = tmp_path / "data"
    name, cookie, case_id = clinician_session(data, "Proxy Hospital", "PROXY-1")
    env = without_vault_settings()
    env |= {"DICOM_VAULT_DATA_DIR": str(data), "DICOM_VAULT_AUTH__COOKIE_SECURE": "false"}
    argv = [str(CLI), "serve", "--no-scp", "--host", "127.0.0.1", "--port", str(proxy.upstream)]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_healthy(f"http://127.0.0.1:{proxy.upstream}", process)
        headers = {"Cookie": f"{name}={cookie}", "X-CSRF-Token": csrf_token(cookie)}
        yield Served(process, headers, case_id, data)
    finally:
        stop_process(process)  # type: ignore[arg-type]


CLIENT = "127.0.0.2"  # the clinician's address; nginx reaches the vault from 127.0.0.1


def _tls(port: int, *, receive_buffer: int | None = None) -> ssl.SSLSocket:
    """A TLS connection to nginx from the clinician's address (a small receive
    buffer makes a slow reader: the kernel holds little of what is sent)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.socket()
    raw.settimeout(30)
    if receive_buffer is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.bind((CLIENT, 0))
    raw.connect(("127.0.0.1", port))
    return context.wrap_socket(raw)


def _request(port: int, head: str, body: bytes = b"") -> tuple[int, str]:
    with _tls(port) as connection:
        connection.sendall(head.encode() + body)
        return _response(connection)


def _response(connection: ssl.SSLSocket) -> tuple[int, str]:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    text = received.decode("latin-1")
    return int(text.split()[1]), text


def _head(method: str, path: str, headers: dict[str, str], length: int) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: vault.example.org", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n\r\n"


class TestNginxInFront:
    def test_an_upload_streams_through_nginx_without_touching_its_disk(
        self, proxy: Proxy, vault_behind: Served
    ) -> None:
        opened = f'{{"case_id": "{vault_behind.case_id}"}}'.encode()
        json_headers = vault_behind.headers | {"Content-Type": "application/json"}
        status, answer = _request(
            proxy.port, _head("POST", "/api/uploads", json_headers, len(opened)), opened
        )
        assert status == 201, answer
        upload_id = re.search(r'"upload_id":"(\w+)"', answer).group(1)  # type: ignore[union-attr]
        # a slice larger than nginx's memory buffer (client_body_buffer_size 1m)
        data = encode(next(make_ct_series(1, rows=1024, columns=1024, seed=5)))
        assert len(data) > 2 * 1024 * 1024
        tus = vault_behind.headers | {
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(data)),
            "Content-Type": "application/offset+octet-stream",
        }
        head = _head("POST", f"/api/uploads/{upload_id}/files", tus, len(data))
        with _tls(proxy.port) as connection:
            connection.sendall(head.encode() + data[: len(data) * 3 // 4])
            time.sleep(1.0)  # nginx has had time to put what it holds somewhere
            held = _files_open_under(proxy.pid, proxy.root / "client_body")
            connection.sendall(data[len(data) * 3 // 4 :])
            status, answer = _response(connection)
        assert held == []  # nothing of the body in nginx's files
        assert status == 201, answer
        assert "x-vault-outcome: stored" in answer.lower()
        # the access log names the clinician's address, not the proxy's
        vault = open_vault(Settings(data_dir=vault_behind.data))
        try:
            created = [e for e in vault.audit.events() if e.action == "upload.create"]
        finally:
            vault.close()
        assert [e.remote for e in created] == [CLIENT]

    def test_a_download_waits_for_a_slow_reader_without_touching_nginxs_disk(
        self, tmp_path: Path, tls_material: TlsMaterial
    ) -> None:
        with engineer_world(tmp_path / "data", "PX") as world:
            case = make_case(world.vault, "PX-BIG")
            assign(world.vault, case.case_id, world.engineer)
            slices = list(make_ct_series(40, rows=512, columns=512, seed=9))
            study = pseudonymise(world.vault, ingest(case, slices))
            with serving(world.vault) as url:
                upstream = int(url.rsplit(":", 1)[1])
                with _nginx(tmp_path / "nginx", tls_material, upstream) as proxy:
                    path = f"/api/engineer/studies/{study}/archive"
                    headers = {"Authorization": f"Bearer {world.token}"}
                    head = _head("GET", path, headers, 0)
                    with _tls(proxy.port, receive_buffer=8192) as connection:
                        connection.sendall(head.encode())
                        received = connection.recv(65536)
                        time.sleep(1.0)  # the vault sends faster than this reader reads
                        held = _files_open_under(proxy.pid, proxy.root / "proxy")
                        while chunk := connection.recv(1 << 20):
                            received += chunk
        assert held == []  # nothing of the archive in nginx's files
        head_part, _, body = received.partition(b"\r\n\r\n")
        assert head_part.split()[1] == b"200", head_part
        length = re.search(rb"content-length: (\d+)", head_part, re.I)
        assert length and len(body) == int(length.group(1)) > 16 * 1024 * 1024
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.testzip() is None
            assert len([n for n in archive.namelist() if n.endswith(".dcm")]) == 40
