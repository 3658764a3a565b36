"""The engine checks its own output: an identifier of the patient left anywhere quarantines it."""

from __future__ import annotations

from pydicom.dataset import Dataset

from deidentify._codec import parse_part10
from deidentify.residual import identifiers_of, residual_identifier
from dicom_ingest.synthetic import encode, make_ct_series
from tests.deidentify_support import make_engine
from tests.upload_support import dicomdir_bytes


def instance(name: str = "Quuxleigh^Marguerite", patient_id: str = "PQX4417093") -> Dataset:
    ds = next(make_ct_series(1, rows=4, columns=4))
    ds.PatientName, ds.PatientID = name, patient_id
    ds.AccessionNumber = "ACC77120"
    ds.PatientBirthDate = "19610512"
    return ds


class TestTheEngineQuarantinesWhatItMissed:
    def test_a_name_kept_in_an_attribute_the_rules_keep_quarantines_the_instance(self) -> None:
        ds = instance()
        ds.ConvolutionKernel = "quuxleigh"  # kept verbatim by rule: a technical string
        outcome = make_engine().deidentify_bytes(encode(ds))
        assert outcome.encoded is None and outcome.quarantine is not None
        assert outcome.quarantine.code == "residual-identifier"
        assert outcome.quarantine.message.endswith("ConvolutionKernel")
        assert "QUUXLEIGH" not in outcome.quarantine.message.upper()

    def test_the_patient_id_in_a_nested_kept_value_is_found(self) -> None:
        ds = instance()
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "PQX4417093", "SCT"
        code.CodeMeaning = "Knee"
        ds.AnatomicRegionSequence = [code]
        outcome = make_engine().deidentify_bytes(encode(ds))
        assert outcome.quarantine is not None
        assert outcome.quarantine.message.endswith("AnatomicRegionSequence[0].CodeValue")

    def test_an_accession_number_left_in_text_is_found(self) -> None:
        ds = instance()
        ds.ConvolutionKernel = "B30F ACC77120"
        outcome = make_engine().deidentify_bytes(encode(ds))
        assert outcome.quarantine is not None


class TestNoFalseAlarms:
    def test_a_clean_instance_passes(self) -> None:
        outcome = make_engine().deidentify_bytes(encode(instance()))
        assert outcome.ok and outcome.encoded is not None

    def test_name_parts_that_are_anatomy_or_inside_words_are_not_alarms(self) -> None:
        ds = instance(name="Hand^Ann", patient_id="1234")
        ds.SeriesDescription = "CT HAND BONE"
        ds.ConvolutionKernel = "SCANNER K123456"
        outcome = make_engine().deidentify_bytes(encode(ds))
        assert outcome.ok, outcome.quarantine

    def test_the_pseudonym_and_replaced_uids_are_not_searched(self) -> None:
        ds = instance(patient_id="225")  # digits that appear in every 2.25 UID
        outcome = make_engine().deidentify_bytes(encode(ds))
        assert outcome.ok, outcome.quarantine


class TestIdentifiers:
    def test_identifiers_are_name_parts_ids_accession_and_birth_date(self) -> None:
        ds = instance()
        other = Dataset()
        other.PatientID = "OTHER-991"
        ds.OtherPatientIDsSequence = [other]
        found = identifiers_of(parse_part10(encode(ds)))
        for expected in ("QUUXLEIGH", "MARGUERITE", "PQX4417093", "ACC77120", "19610512"):
            assert expected in found
        assert "OTHER-991" in found

    def test_short_values_and_known_terms_are_not_searched(self) -> None:
        found = identifiers_of(parse_part10(encode(instance(name="Li^Knee", patient_id="7"))))
        assert "LI" not in found and "KNEE" not in found and "7" not in found

    def test_a_token_is_matched_whole(self) -> None:
        ds = instance(name="Doe^Jo")
        ds.ConvolutionKernel = "XQUUXLEIGHX"
        data = encode(ds)
        assert residual_identifier(data, ["QUUXLEIGH"], "PSN-X") is None
        assert residual_identifier(data, ["XQUUXLEIGHX"], "PSN-X") == "ConvolutionKernel"


class TestDirectories:
    def test_a_dicomdir_is_quarantined_though_its_data_set_names_no_sop_class(self) -> None:
        data = dicomdir_bytes([["77654033", "CR1", "6154"]], marker="Doe^Archibald")
        outcome = make_engine().deidentify_bytes(data)
        assert outcome.encoded is None and outcome.quarantine is not None
        assert outcome.quarantine.code == "directory"
