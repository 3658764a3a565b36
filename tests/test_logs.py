"""The operational log of the long-running commands (vault.logs)."""

from __future__ import annotations

import logging
import logging.config
import secrets
from collections.abc import Iterator

import pytest

from vault.logs import OWN_LOGGERS, UVICORN_LOGGERS, configure_logging


@pytest.fixture
def fresh_logging() -> Iterator[None]:
    """Put the root handlers and the levels back as they were after the test
    (uvicorn's loggers too: servers of other tests configure them their way)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = (*OWN_LOGGERS, *UVICORN_LOGGERS, "pynetdicom")
    saved = {
        name: (logger.level, list(logger.handlers), logger.propagate)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (was_level, was_handlers, was_propagating) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(was_level)
        logger.handlers[:] = was_handlers
        logger.propagate = was_propagating


@pytest.fixture
def uvicorn_configured_its_way() -> None:
    """uvicorn's loggers as its own logging configuration leaves them (as a server of
    another test, or an operator running ``uvicorn`` directly, would)."""
    from uvicorn.config import LOGGING_CONFIG

    logging.config.dictConfig(LOGGING_CONFIG)


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

    @pytest.mark.usefixtures("uvicorn_configured_its_way")
    def test_a_traceback_keeps_its_frames_and_types_but_never_an_exceptions_message(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info")
        marker = f"DOE^JANE-{secrets.token_hex(6)}"  # source lines show the name, not this

        def read_frames(value: str) -> int:
            return int(value)  # ValueError: invalid literal for int() with base 10: '...'

        try:
            try:
                read_frames(marker)
            except ValueError as exc:
                raise RuntimeError(f"thumbnail of {exc}") from exc
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        err = capsys.readouterr().err
        assert marker not in err and marker[9:] not in err, err
        assert " ERROR uvicorn.error: Exception in ASGI application" in err
        assert "in read_frames" in err  # the frame where it happened
        assert "builtins.ValueError (message withheld: it may quote data)" in err
        assert "The above exception was the direct cause of the following exception" in err
        assert "builtins.RuntimeError (message withheld" in err

    @pytest.mark.usefixtures("uvicorn_configured_its_way")
    def test_uvicorns_server_messages_use_the_vaults_format(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info")
        logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:8000")
        err = capsys.readouterr().err
        assert " INFO uvicorn.error: Uvicorn running on http://127.0.0.1:8000" in err

    def test_a_quoted_value_with_an_apostrophe_is_redacted_whole(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging("info")
        logging.getLogger("somelibrary").warning("bad value 'O'BRIEN^JANE' in PatientName")
        logging.getLogger("somelibrary").warning('bad value "D\\"ARCY" in PatientName')
        err = capsys.readouterr().err
        assert "BRIEN" not in err and "ARCY" not in err
        assert err.count("bad value <value> in PatientName") == 2


def test_an_unexpected_receiver_failure_is_logged_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dicom_ingest._scp_store import log_unexpected

    marker = f"DOE^JANE-{secrets.token_hex(6)}"
    try:
        try:
            int(marker)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from exc
    except RuntimeError as exc:
        with caplog.at_level(logging.ERROR, logger="dicom_ingest.scp"):
            log_unexpected("C-STORE", exc)
    (record,) = caplog.records
    text = record.getMessage()
    assert marker[9:] not in text
    assert text.startswith("C-STORE failed unexpectedly\nTraceback (most recent call last):")
    assert "builtins.ValueError (message withheld" in text
    assert "builtins.RuntimeError (message withheld" in text
