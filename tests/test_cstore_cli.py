"""The receiver from the command line: ``dicom-vault pacs add`` and ``dicom-vault scp``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicom_ingest.synthetic import write_series
from tests.cstore_support import small_series
from tests.services.dicom_peers import Dcmtk, free_port, nodelay_env

CLI = Path(sys.executable).with_name("dicom-vault")
NEW_ORG = ("--organisation", "Demo Hospital", "--new-organisation")  # each test's first command


def cli_env(data_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DICOM_VAULT_DATA_DIR": str(data_dir),
        "DICOM_VAULT_SCP__PORT": str(port),
    }


def wait_for_echo(dcmtk: Dcmtk, port: int, process: subprocess.Popen[str]) -> None:
    """Poll with C-ECHO until the receiver answers (start-up readiness, not a timing check)."""
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError("the receiver exited during start-up")
        echo = subprocess.run(
            [str(dcmtk.echoscu), "-aet", "PACS1", "-aec", "DICOMVAULT", "127.0.0.1", str(port)],
            capture_output=True,
        )
        if echo.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the receiver never answered C-ECHO")


class TestScpCommand:
    def test_registered_pacs_stores_through_the_scp_command(
        self, dcmtk: Dcmtk, tmp_path: Path
    ) -> None:
        port = free_port()
        env = cli_env(tmp_path / "var", port)
        added = subprocess.run(
            [str(CLI), "pacs", "add", "PACS1", *NEW_ORG],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "PACS node PACS1 added" in added.stdout
        process = subprocess.Popen(
            [str(CLI), "scp"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_for_echo(dcmtk, port, process)
            files = write_series(tmp_path / "in", small_series(2))
            sent = subprocess.run(
                [
                    str(dcmtk.storescu),
                    "-aet",
                    "PACS1",
                    "-aec",
                    "DICOMVAULT",
                    "127.0.0.1",
                    str(port),
                    *list(map(str, files)),
                ],
                capture_output=True,
                env=nodelay_env(),
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
        assert sent.returncode == 0
        assert process.returncode == 0
        listed = subprocess.run(
            [str(CLI), "list"], env=env, capture_output=True, text=True, check=True
        )
        assert "case=(inbox)  instances=2" in listed.stdout

    def test_the_receiver_log_names_each_association_and_no_identifier(
        self, dcmtk: Dcmtk, tmp_path: Path
    ) -> None:
        port = free_port()
        env = cli_env(tmp_path / "var", port)
        add = [str(CLI), "pacs", "add", "PACS1", *NEW_ORG]
        subprocess.run(add, env=env, capture_output=True, check=True)
        datasets = small_series(2)
        files = write_series(tmp_path / "in", datasets)
        process = subprocess.Popen(
            [str(CLI), "scp"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_for_echo(dcmtk, port, process)
            for caller in ("PACS1", "STRANGER"):
                subprocess.run(
                    [
                        str(dcmtk.storescu),
                        "-aet",
                        caller,
                        "-aec",
                        "DICOMVAULT",
                        "127.0.0.1",
                        str(port),
                        *list(map(str, files)),
                    ],
                    capture_output=True,
                    env=nodelay_env(),
                )
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
        assert "(PACS node PACS1) closed: 2 stored (0 already held), 0 refused" in output
        assert "admitted: PACS node PACS1" in output
        assert "refused: unknown-caller" in output
        assert "STRANGER" not in output  # the caller's own text is not logged
        for ds in datasets:
            assert str(ds.SOPInstanceUID) not in output
            assert str(ds.StudyInstanceUID) not in output
            assert str(ds.PatientID) not in output

    def test_log_level_warning_keeps_the_associations_out_of_the_log(
        self, dcmtk: Dcmtk, tmp_path: Path
    ) -> None:
        port = free_port()
        env = cli_env(tmp_path / "var", port) | {"DICOM_VAULT_LOG_LEVEL": "warning"}
        add = [str(CLI), "pacs", "add", "PACS1", *NEW_ORG]
        subprocess.run(add, env=env, capture_output=True, check=True)
        process = subprocess.Popen(
            [str(CLI), "scp"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_for_echo(dcmtk, port, process)
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
        assert "DICOM receiver ready" in output
        assert "association from" not in output

    def test_duplicate_ae_title_is_refused(self, tmp_path: Path) -> None:
        env = cli_env(tmp_path / "var", free_port())
        argv = [str(CLI), "pacs", "add", "PACS1", *NEW_ORG]
        subprocess.run(argv, env=env, capture_output=True, check=True)
        again = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert again.returncode == 2
        assert "already registered" in again.stderr


class TestStartFailures:
    """What stops the receiver from starting is said in one line, exit status 2."""

    @pytest.mark.parametrize(
        ("command", "processes"),
        [(["scp"], "1"), (["scp"], "2"), (["serve", "--port", "0"], "1")],
    )
    def test_a_port_already_in_use_is_named_in_one_line(
        self, tmp_path: Path, command: list[str], processes: str
    ) -> None:
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            env = cli_env(tmp_path / "var", port) | {"DICOM_VAULT_SCP__PROCESSES": processes}
            done = subprocess.run(
                [str(CLI), *command], env=env, capture_output=True, text=True, timeout=120
            )
        assert done.returncode == 2
        assert (
            f"error: cannot listen for DICOM on 127.0.0.1:{port}: Address already in use"
            in done.stderr
        )
        assert "Traceback" not in done.stderr

    def test_a_certificate_file_that_is_not_one_is_refused_in_plain_words(
        self, tmp_path: Path
    ) -> None:
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        env = cli_env(tmp_path / "var", free_port()) | {
            "DICOM_VAULT_SCP__TLS_CERT": str(junk),
            "DICOM_VAULT_SCP__TLS_KEY": str(junk),
        }
        done = subprocess.run(
            [str(CLI), "scp"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2
        assert "error: the DICOM TLS certificate or key cannot be used" in done.stderr
        assert "Traceback" not in done.stderr
