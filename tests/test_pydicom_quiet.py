"""No element value reaches a log or a warning through pydicom (vault.pydicom_quiet),
nor an identifier through pynetdicom's dumps (dicom_ingest.scp).

pydicom reports an invalid value with the value itself; here the values a
sender could put in are a patient's UID, birth date and name.
"""

from __future__ import annotations

import io
import logging
import warnings

import pydicom.config
import pytest

from dicom_ingest import IngestOrigin, IngestPipeline, ValidationPolicy
from dicom_ingest.synthetic import encode, make_ct_series
from vault.admin import create_case, get_or_create_organisation
from vault.core import Vault
from vault.errors import CorruptHeader
from vault.pydicom_quiet import REDACTED

BAD_UID = "1.2.826.0.1.3680043.8.498.0042"  # a component with a leading zero
BAD_BIRTH_DATE = "1970.131"  # DA is YYYYMMDD: right length, wrong characters
BAD_NAME = "Quuxzeph^Varn^Oblo^Trim^Kesh^Vald"  # more than five components


def _invalid_slice(study_uid: str) -> bytes:
    with pydicom.config.disable_value_validation():
        ds = next(iter(make_ct_series(1, rows=16, columns=16)))
        ds.StudyInstanceUID = study_uid
        ds.PatientBirthDate = BAD_BIRTH_DATE
        ds.PatientName = BAD_NAME
        return encode(ds)


def _pipeline(vault: Vault) -> tuple[IngestPipeline, IngestOrigin]:
    with vault.catalog.session() as session:
        organisation = get_or_create_organisation(session, "Quiet Hospital")
        case = create_case(session, "CASE-QUIET", organisation)
        origin = IngestOrigin("cli", "cli", organisation.id, case.id)
    return IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy)), origin


class TestNoValueInLogsOrWarnings:
    def test_an_invalid_uid_is_refused_without_any_value_in_logs_or_warnings(
        self, embedded_vault: Vault, caplog: pytest.LogCaptureFixture
    ) -> None:
        pipeline, origin = _pipeline(embedded_vault)
        data = _invalid_slice(BAD_UID)
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CorruptHeader) as refused:
                pipeline.ingest(io.BytesIO(data), origin)
        said = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
        said.append(str(refused.value))
        for value in (BAD_UID, BAD_BIRTH_DATE, "Quuxzeph"):
            assert not [line for line in said if value in line]

    def test_reading_invalid_identifying_values_logs_and_warns_none_of_them(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        data = _invalid_slice(BAD_UID)
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(data))
            read = [str(ds.StudyInstanceUID), str(ds.PatientName), str(ds.PatientBirthDate)]
        said = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
        assert read == [BAD_UID, BAD_NAME, BAD_BIRTH_DATE]  # read exactly as stored
        for value in (BAD_UID, BAD_BIRTH_DATE, "Quuxzeph"):
            assert not [line for line in said if value in line]

    def test_a_pydicom_log_record_has_its_quoted_values_redacted(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="pydicom"):
            logging.getLogger("pydicom").warning("Invalid value for VR PN: %r.", BAD_NAME)
            logging.getLogger("pydicom").warning('Value "%s" is not valid for DS', "1.0mm")
        messages = [record.getMessage() for record in caplog.records]
        assert messages == [
            f"Invalid value for VR PN: {REDACTED}.",
            f"Value {REDACTED} is not valid for DS",
        ]


class TestPynetdicomLogsNoIdentifiers:
    def test_the_receiver_turns_off_pynetdicoms_identifier_dumps(self) -> None:
        from pynetdicom import _config

        import dicom_ingest.scp  # noqa: F401  (sets them on import)

        assert (_config.LOG_REQUEST_IDENTIFIERS, _config.LOG_RESPONSE_IDENTIFIERS) == (False, False)
