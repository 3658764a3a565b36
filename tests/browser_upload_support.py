"""The browser upload tests' world: a restartable server process, a clinician, a scan.

:class:`Server` runs ``dicom-vault serve`` in a subprocess on an embedded
vault (so a test can kill it and start it again on the same port);
:func:`seed` writes a hospital, a case and an enrolled clinician before it
starts. :func:`make_scan` writes what a surgeon has on their desk: a folder
of CT slices with OS leftovers and a note, a ZIP of an MR series and a CD
with its DICOMDIR. :func:`stored_counts` reads what the server stored.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydicom.fileset import FileSet
from sqlalchemy import func, select

from dicom_ingest.synthetic import encode, make_ct_series, make_mr_series, write_series
from tests.services.vault_env import without_vault_settings
from vault.admin import create_case, create_user, get_or_create_organisation
from vault.auth import totp
from vault.auth.login import Authenticator
from vault.catalog.deid import PseudonymisedStudy
from vault.catalog.models import AuditEvent, Instance, Study
from vault.core import open_vault
from vault.settings import AuthSettings, Settings, UploadSettings

PASSWORD = "a passphrase typed in a browser"
CHUNK = 64 * 1024  # the smallest chunk the settings allow: large files take many PATCHes
STUDY_UID = "1.2.826.0.1.3680043.8.498.5150"
SERVE = Path(sys.executable).with_name("dicom-vault")
START_TIMEOUT_S = 60.0


@dataclass
class Server:
    """``dicom-vault serve`` in a subprocess, restartable on the same port."""

    data_dir: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    # The upload page's stall limit (uploads.browser_stall_seconds); None: the default.
    stall_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> Settings:
        auth = AuthSettings(cookie_secure=False, password_time_cost=1, password_memory_kib=8)
        return Settings(
            data_dir=self.data_dir, auth=auth, uploads=UploadSettings(browser_chunk_bytes=CHUNK)
        )

    def _env(self) -> dict[str, str]:
        env = without_vault_settings()
        env.update(
            DICOM_VAULT_DATA_DIR=str(self.data_dir),
            DICOM_VAULT_AUTH__COOKIE_SECURE="false",
            DICOM_VAULT_AUTH__PASSWORD_TIME_COST="1",
            DICOM_VAULT_AUTH__PASSWORD_MEMORY_KIB="8",
            DICOM_VAULT_UPLOADS__BROWSER_CHUNK_BYTES=str(CHUNK),
        )
        if self.stall_seconds is not None:
            env["DICOM_VAULT_UPLOADS__BROWSER_STALL_SECONDS"] = str(self.stall_seconds)
        return env

    def start(self) -> None:
        command = [str(SERVE), "serve", "--no-scp", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self._env(), stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail("the server did not start")

    def kill(self) -> None:
        """Kill the process at once (SIGKILL): no shutdown, no goodbye."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class World:
    server: Server
    case_id: str
    case_ref: str
    email: str
    totp_secret: str
    requests: list[tuple[str, str, str, dict[str, str]]] = field(default_factory=list)
    responses: list[tuple[str, str, str, int]] = field(default_factory=list)
    phase: str = "before"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(server: Server) -> World:
    """A hospital, a case and an enrolled clinician, written before the server starts."""
    vault = open_vault(server.settings())
    auth = Authenticator(vault)
    secret = totp.new_secret()
    try:
        with vault.catalog.session() as session:
            org = get_or_create_organisation(session, "Hospital A", kind="hospital")
            case = create_case(session, "KNEE-0042", org)
            user = create_user(
                session,
                "surgeon@hospital.example",
                "clinician",
                org,
                password_hash=auth.passwords.hash(PASSWORD),
            )
            user.totp_sealed = auth.sealer.seal(user.id, secret)
            user.totp_confirmed_at = vault.clock.now()
            world = World(server, case.id, case.reference, user.email, secret)
    finally:
        vault.close()
    return world


@dataclass(frozen=True)
class Scan:
    folder: Path  # 300 CT slices, an OS leftover and a note that is not DICOM
    archive: Path  # a ZIP of 12 MR slices
    cd: Path  # a CD: DICOMDIR and 8 thick CT slices in its tree

    sendable = 300 + 1 + 1 + 8  # .DS_Store and DICOMDIR are skipped in the page


def make_scan(root: Path) -> Scan:
    folder = root / "knee-ct"
    write_series(folder, make_ct_series(300, rows=64, columns=64, study_uid=STUDY_UID))
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "notes.txt").write_text("appointment on Tuesday\n")
    archive = root / "mr-knee.zip"
    mr = make_mr_series(12, rows=128, columns=128, study_uid=STUDY_UID, series_number=3, seed=3)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
        for index, ds in enumerate(mr):
            writer.writestr(f"MR/IM{index:04d}.dcm", encode(ds))
    cd = root / "cd"
    fileset = FileSet()
    for ds in make_ct_series(
        8, rows=64, columns=64, slice_thickness=2.0, study_uid=STUDY_UID, series_number=4, seed=4
    ):
        fileset.add(ds)
    fileset.write(cd)
    return Scan(folder, archive, cd)


def stored_counts(world: World) -> tuple[int, int]:
    """Instances stored in the case, and ingest records that found a duplicate."""
    vault = open_vault(world.server.settings())
    try:
        with vault.catalog.read_session() as session:
            studies = select(Study.id).where(Study.case_id == world.case_id)
            instances = session.scalar(
                select(func.count()).select_from(Instance).where(Instance.study_id.in_(studies))
            )
            duplicates = session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "instance.store", AuditEvent.outcome == "duplicate")
            )
    finally:
        vault.close()
    return int(instances or 0), int(duplicates or 0)


def pseudonymised_states(world: World) -> list[str]:
    """The de-identification state of each study of the case, as the server left it."""
    vault = open_vault(world.server.settings())
    try:
        with vault.catalog.read_session() as session:
            query = (
                select(Study.id, PseudonymisedStudy.state)
                .outerjoin(PseudonymisedStudy, PseudonymisedStudy.study_id == Study.id)
                .where(Study.case_id == world.case_id)
            )
            return sorted(str(state) for _study, state in session.execute(query))
    finally:
        vault.close()
