"""The operational log of the long-running commands (vault.logs)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from vault.logs import OWN_LOGGERS, configure_logging


@pytest.fixture
def fresh_logging() -> Iterator[None]:
    """Put the root handlers and the levels back as they were after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in (*OWN_LOGGERS, "pynetdicom")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.usefixtures("fresh_logging")
class TestConfigureLogging:
    def test_the_vaults_info_records_reach_stderr_and_other_libraries_only_warn(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info")
        logging.getLogger("dicom_ingest.scp").info("association closed: %d stored", 3)
        logging.getLogger("pynetdicom.assoc").info("Association Accepted")
        logging.getLogger("pynetdicom.assoc").warning("peer went away")
        err = capsys.readouterr().err
        assert " INFO dicom_ingest.scp: association closed: 3 stored" in err
        assert "Association Accepted" not in err
        assert " WARNING pynetdicom.assoc: peer went away" in err

    def test_a_quoted_value_never_reaches_the_log_whoever_logs_it(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info")
        logging.getLogger("somelibrary").warning("bad value 'DOE^JANE' in %s", "PatientName")
        err = capsys.readouterr().err
        assert "DOE^JANE" not in err
        assert "bad value <value> in PatientName" in err

    def test_the_level_setting_silences_info_and_calling_twice_adds_no_second_handler(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info")
        configure_logging("warning")
        logging.getLogger("vault.retention").info("expired 2 studies")
        logging.getLogger("vault.retention").error("the store is gone")
        err = capsys.readouterr().err
        assert "expired 2 studies" not in err
        assert err.count("the store is gone") == 1
