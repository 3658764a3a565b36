"""The newcomer's path: the CLI on the embedded default, as a separate process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dicom_ingest.synthetic import make_ct_series, write_series
from tests.services.key_providers import key_environment, keys_elsewhere
from vault.core import open_vault
from vault.settings import KeySettings, Settings

CLI = Path(sys.executable).with_name("dicom-vault")
DEMO_HOSPITAL = ("--organisation", "Demo Hospital", "--new-organisation")  # each test's first


def run(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, check=check, timeout=120
    )


@pytest.fixture
def dicom_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "cd"
    write_series(folder / "SERIES1", make_ct_series(4, rows=32, columns=32, seed=3))
    (folder / "DICOMDIR").write_bytes(b"index file, skipped quietly")
    (folder / ".DS_Store").write_bytes(b"junk")
    return folder


class TestIngestAndExport:
    def test_folder_ingested_and_exported_bit_exact(
        self, tmp_path: Path, dicom_folder: Path
    ) -> None:
        data = tmp_path / "var"
        run(data, "case", "create", "CASE-7", *DEMO_HOSPITAL)
        out = run(data, "ingest", str(dicom_folder), "--case", "CASE-7").stdout
        assert "stored 4, already stored 0, refused 0" in out
        study_id = run(data, "list").stdout.split()[0]
        run(data, "export", study_id, "--out", str(tmp_path / "export"))
        exported = sorted(p.read_bytes() for p in (tmp_path / "export").rglob("*.dcm"))
        originals = sorted(p.read_bytes() for p in (dicom_folder / "SERIES1").iterdir())
        assert exported == originals
        assert run(data, "audit", "verify").stdout.strip() == "access log intact"

    def test_zip_archive_is_ingested_without_extracting(
        self, tmp_path: Path, dicom_folder: Path
    ) -> None:
        archive = tmp_path / "study.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted((dicom_folder / "SERIES1").iterdir()):
                zf.write(path, f"STUDY/{path.name}")
        data = tmp_path / "var"
        run(data, "case", "create", "CASE-8", *DEMO_HOSPITAL)
        out = run(data, "ingest", str(archive), "--case", "CASE-8").stdout
        assert "stored 4" in out

    def test_refused_files_are_reported_and_exit_nonzero(
        self, tmp_path: Path, dicom_folder: Path
    ) -> None:
        (dicom_folder / "notes.txt").write_text("not an image")
        data = tmp_path / "var"
        run(data, "case", "create", "CASE-9", *DEMO_HOSPITAL)
        result = run(data, "ingest", str(dicom_folder), "--case", "CASE-9", check=False)
        assert result.returncode == 1
        assert "notes.txt: not a DICOM file" in result.stdout
        assert "stored 4, already stored 0, refused 1" in result.stdout

    def test_unsafe_zip_is_refused_whole(self, tmp_path: Path, dicom_folder: Path) -> None:
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("../../etc/passwd", b"x")
        data = tmp_path / "var"
        run(data, "case", "create", "CASE-10", *DEMO_HOSPITAL)
        result = run(data, "ingest", str(archive), "--case", "CASE-10", check=False)
        assert "absolute or '..' path" in result.stdout
        assert result.returncode == 1


class TestKeys:
    def test_rotate_then_rewrap_keeps_export_working(
        self, tmp_path: Path, dicom_folder: Path
    ) -> None:
        data = tmp_path / "var"
        run(data, "case", "create", "CASE-11", *DEMO_HOSPITAL)
        run(data, "ingest", str(dicom_folder), "--case", "CASE-11")
        assert "kek-local-v2" in run(data, "keys", "rotate").stdout
        assert "re-wrapped 1" in run(data, "keys", "rewrap").stdout
        study_id = run(data, "list").stdout.split()[0]
        run(data, "export", study_id, "--out", str(tmp_path / "export"))
        assert len(list((tmp_path / "export").rglob("*.dcm"))) == 4


def test_key_file_is_private(tmp_path: Path, dicom_folder: Path) -> None:
    data = tmp_path / "var"
    run(data, "case", "create", "CASE-12", *DEMO_HOSPITAL)
    key_files = [p for p in (data / "keys").iterdir() if p.is_file()]
    assert key_files and all(p.stat().st_mode & 0o077 == 0 for p in key_files)
    shutil.rmtree(data)


class TestServe:
    def test_serve_answers_on_the_embedded_default(self, tmp_path: Path) -> None:
        import socket
        import time

        import httpx

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(tmp_path / "var")}
        env["DICOM_VAULT_RETENTION__DAILY_RUN_HOUR_UTC"] = "3"
        server = subprocess.Popen(
            [str(CLI), "serve", "--port", str(port), "--no-scp"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise
                    time.sleep(0.2)
            assert response.json() == {"status": "ok"}
            catalog = tmp_path / "var" / "catalog.sqlite3"
            assert catalog.stat().st_mode & 0o077 == 0
        finally:
            server.terminate()
            said, logged = server.communicate(timeout=30)
        # no broker: the retention promises are kept by this process itself
        assert "daily jobs (expiry, access-log purge, backup) in this process at 03:00 UTC" in said
        # uvicorn logs through the vault's handler (redaction, withheld messages),
        # and no line per request: the access log records accesses
        assert f" INFO uvicorn.error: Uvicorn running on http://127.0.0.1:{port}" in logged
        assert "/healthz" not in said + logged


class TestKeysNotFound:
    def test_serve_says_in_one_line_that_its_keys_are_not_found(
        self, tmp_path: Path, key_settings: KeySettings
    ) -> None:
        data = tmp_path / "var"
        vault = open_vault(Settings(data_dir=data, keys=key_settings))
        with vault.catalog.session() as session:
            vault.keyring.persist(session, vault.keyring.generate())
        vault.close()
        wrong = key_environment(keys_elsewhere(key_settings))
        env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data), **wrong}
        result = subprocess.run(
            [str(CLI), "serve", "--no-scp", "--port", "9"],
            env=env, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2
        assert result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1
        credentials = [value for name, value in wrong.items() if name.endswith(("PIN", "TOKEN"))]
        for secret in credentials:
            assert secret not in result.stderr


class TestDeidentificationFromTheCli:
    def test_settled_study_is_pseudonymised_and_reidentified_only_with_a_reference(
        self, tmp_path: Path, dicom_folder: Path
    ) -> None:
        data = tmp_path / "var"
        run(data, "case", "create", "CASE-13", *DEMO_HOSPITAL)
        run(data, "ingest", str(dicom_folder), "--case", "CASE-13")
        study_id = run(data, "list").stdout.split()[0]
        assert "deidentification=not-queued" in run(data, "list").stdout
        settle = (
            "import sys; from vault.core import open_vault; from vault.settings import Settings;"
            "from vault.settle import settle_study, StudySettledHooks;"
            "from deidentify.tasks import create_celery_app, register_deidentification;"
            "v = open_vault(Settings()); hooks = StudySettledHooks();"
            "register_deidentification(hooks, create_celery_app(v.settings, vault=v));"
            "settle_study(v, sys.argv[1], hooks)"
        )
        env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data)}
        subprocess.run([sys.executable, "-c", settle, study_id], env=env, check=True, timeout=120)
        assert "deidentification=done" in run(data, "list").stdout

        from vault.catalog.deid import PseudonymisedStudy
        from vault.core import open_vault
        from vault.settings import Settings

        vault = open_vault(Settings(data_dir=data))
        with vault.catalog.read_session() as session:
            pseudonym = session.query(PseudonymisedStudy.pseudonym).scalar()
        vault.close()
        refused = run(data, "reidentify", pseudonym, "--request", "../x", check=False)
        assert refused.returncode == 2
        found = run(data, "reidentify", pseudonym, "--request", "DSR-2026-001").stdout
        assert found.split()[0] == study_id
        unknown = run(data, "reidentify", "PSN-NOSUCHPSEUDONYM", "--request", "DSR-1", check=False)
        assert unknown.returncode == 1
        vault = open_vault(Settings(data_dir=data))
        actions = [(e.action, e.outcome) for e in vault.audit.events()]
        vault.close()
        assert ("pseudonym.reidentify", "success") in actions
        assert ("pseudonym.reidentify", "not-found") in actions
