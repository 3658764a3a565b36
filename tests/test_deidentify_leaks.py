"""De-identified output: no trace of planted identifiers, exact geometry, linked references."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from deidentify import PrivateTag, Profile, ReportAction
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series, make_mr_series
from tests.deidentify_support import FixedMacKey, leaks, make_engine, uids_of

PATIENT = SyntheticPatient()
GEOMETRY = (
    "Rows",
    "Columns",
    "PixelSpacing",
    "SliceThickness",
    "SliceLocation",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
)


@pytest.fixture(scope="module")
def study() -> list[pydicom.Dataset]:
    """A planted CT series and an MR series of one study, the MR referring to the CT."""
    ct = list(make_ct_series(4, rows=32, columns=32, plant_phi=True, seed=1))
    mr = list(
        make_mr_series(
            3,
            rows=32,
            columns=32,
            plant_phi=True,
            seed=1,
            series_number=2,
            study_uid=ct[0].StudyInstanceUID,
            frame_of_reference_uid=ct[0].FrameOfReferenceUID,
            references=[ct[0]],
        )
    )
    return ct + mr


@pytest.fixture(scope="module")
def outputs(study: list[pydicom.Dataset]) -> list[bytes]:
    engine = make_engine()
    results = [engine.deidentify_bytes(encode(ds)) for ds in study]
    assert all(r.ok for r in results), [r.quarantine for r in results]
    return [r.encoded for r in results if r.encoded is not None]


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


class TestPlantedIdentifiersLeaveNoTrace:
    def test_every_marker_is_planted_in_the_input(self, study: list[pydicom.Dataset]) -> None:
        data = b"".join(encode(ds) for ds in study)
        assert sorted(leaks(data, PATIENT.markers())) != []
        missing = [m for m in PATIENT.markers() if not leaks(data, [m])]
        assert missing == []

    def test_no_marker_in_any_byte_of_any_output(self, outputs: list[bytes]) -> None:
        for data in outputs:
            assert leaks(data, PATIENT.markers()) == []

    def test_no_original_uid_in_any_byte_of_any_output(
        self, study: list[pydicom.Dataset], outputs: list[bytes]
    ) -> None:
        originals = set().union(*(uids_of(ds) for ds in study))
        assert len(originals) > 10
        for data in outputs:
            assert [u for u in originals if u.encode() in data] == []

    def test_private_attributes_are_gone_at_every_depth(self, outputs: list[bytes]) -> None:
        found: list[int] = []
        for data in outputs:
            _read(data).walk(lambda _, e: found.append(e.tag) if e.tag.is_private else None)
        assert found == []

    def test_overlays_and_curves_are_gone(self, outputs: list[bytes]) -> None:
        for data in outputs:
            groups = {int(elem.tag) >> 16 for elem in _read(data)}
            assert not any(0x5000 <= g <= 0x60FF for g in groups)


class TestGeometryAndPixelsStayBitExact:
    def test_pixel_data_bytes_are_identical(
        self, study: list[pydicom.Dataset], outputs: list[bytes]
    ) -> None:
        for ds, data in zip(study, outputs, strict=True):
            assert _read(data).PixelData == ds.PixelData

    @pytest.mark.parametrize("keyword", GEOMETRY)
    def test_geometry_attribute_is_unchanged(
        self, keyword: str, study: list[pydicom.Dataset], outputs: list[bytes]
    ) -> None:
        for ds, data in zip(study, outputs, strict=True):
            if keyword in ds:
                assert _read(data)[keyword].value == ds[keyword].value

    def test_decoded_pixels_are_equal(
        self, study: list[pydicom.Dataset], outputs: list[bytes]
    ) -> None:
        before = _read(encode(study[0])).pixel_array
        assert np.array_equal(_read(outputs[0]).pixel_array, before)


class TestUidReferencesStayConsistent:
    def test_reference_in_one_series_names_the_new_uid_of_the_other(
        self, outputs: list[bytes]
    ) -> None:
        ct_first, mr_first = _read(outputs[0]), _read(outputs[4])
        referenced = {item.ReferencedSOPInstanceUID for item in mr_first.ReferencedImageSequence}
        assert ct_first.SOPInstanceUID in referenced

    def test_reference_to_the_previous_slice_follows_it(self, outputs: list[bytes]) -> None:
        first, second = _read(outputs[0]), _read(outputs[1])
        assert second.ReferencedImageSequence[-1].ReferencedSOPInstanceUID == first.SOPInstanceUID

    def test_study_and_frame_of_reference_are_shared_across_series(
        self, outputs: list[bytes]
    ) -> None:
        datasets = [_read(d) for d in outputs]
        assert len({ds.StudyInstanceUID for ds in datasets}) == 1
        assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 2

    def test_file_meta_instance_uid_matches_the_data_set(self, outputs: list[bytes]) -> None:
        for data in outputs:
            ds = _read(data)
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.SOPInstanceUID.startswith("2.25.") and len(ds.SOPInstanceUID) <= 64

    def test_sop_class_and_transfer_syntax_are_kept(
        self, study: list[pydicom.Dataset], outputs: list[bytes]
    ) -> None:
        for ds, data in zip(study, outputs, strict=True):
            out = _read(data)
            assert out.SOPClassUID == ds.SOPClassUID
            assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


class TestPseudonymsLinkPatients:
    def _pseudonym(self, patient: SyntheticPatient, seed: int) -> str:
        ds = next(make_ct_series(1, rows=8, columns=8, patient=patient, seed=seed))
        outcome = make_engine().deidentify_bytes(encode(ds))
        assert outcome.dataset is not None
        assert outcome.dataset.PatientID == outcome.dataset.PatientName == outcome.pseudonym
        return str(outcome.pseudonym)

    def test_two_studies_of_one_patient_get_one_pseudonym(self) -> None:
        assert self._pseudonym(PATIENT, seed=1) == self._pseudonym(PATIENT, seed=2)

    def test_different_patients_get_different_pseudonyms(self) -> None:
        names = {self._pseudonym(SyntheticPatient.generate(n), seed=n) for n in range(5)}
        assert len(names) == 5

    def test_another_key_gives_another_pseudonym(self) -> None:
        ds = next(make_ct_series(1, rows=8, columns=8))
        one = make_engine().deidentify_bytes(encode(ds)).pseudonym
        other = make_engine(key=FixedMacKey(b"another key, another deployment!")).deidentify_bytes(
            encode(ds)
        )
        assert one != other.pseudonym


class TestDatesShiftPerPatient:
    def _study_moment(self, seed: int, study_date: str) -> tuple[str, str]:
        patient = SyntheticPatient(study_date=study_date)
        ds = next(make_ct_series(1, rows=8, columns=8, patient=patient, seed=seed))
        out = make_engine().deidentify_bytes(encode(ds)).dataset
        assert out is not None
        return out.StudyDate, out.StudyTime

    def test_interval_between_two_studies_of_a_patient_is_kept(self) -> None:
        from datetime import datetime

        first_date, first_time = self._study_moment(1, "20230517")
        second_date, second_time = self._study_moment(2, "20230704")
        parse = lambda d, t: datetime.strptime(d + t[:6], "%Y%m%d%H%M%S")  # noqa: E731
        assert (parse(second_date, second_time) - parse(first_date, first_time)).days == 48
        assert first_date != "20230517"

    def test_longitudinal_information_is_marked_modified(self, outputs: list[bytes]) -> None:
        assert _read(outputs[0]).LongitudinalTemporalInformationModified == "MODIFIED"


class TestDeidentificationIsRecorded:
    def test_patient_identity_removed_and_method_codes_are_set(self, outputs: list[bytes]) -> None:
        ds = _read(outputs[0])
        assert ds.PatientIdentityRemoved == "YES"
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert codes == {"113100", "113105", "113107", "113108"}
        assert all(i.CodingSchemeDesignator == "DCM" for i in ds.DeidentificationMethodCodeSequence)
        assert "Basic Application Confidentiality Profile" in ds.DeidentificationMethod

    def test_patient_characteristics_are_kept(self, outputs: list[bytes]) -> None:
        ds = _read(outputs[0])
        assert (ds.PatientSex, ds.PatientAge) == ("F", "062Y")
        assert (float(ds.PatientSize), float(ds.PatientWeight)) == (1.64, 58.5)

    def test_report_names_attributes_without_values(self, study: list[pydicom.Dataset]) -> None:
        outcome = make_engine().deidentify_bytes(encode(study[1]))
        by_path = {c.path: c.action for c in outcome.report}
        assert by_path["PatientName"] is ReportAction.REPLACED
        assert by_path["OtherPatientIDsSequence"] is ReportAction.REMOVED
        assert by_path["StudyDate"] is ReportAction.SHIFTED
        assert by_path["SeriesDescription"] is ReportAction.CLEANED
        assert by_path["PixelData"] is ReportAction.KEPT
        assert by_path["SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].PersonName"] is (
            ReportAction.REPLACED
        )
        assert leaks(repr(outcome.report).encode(), PATIENT.markers()) == []


class TestPrivateSafelist:
    def test_a_safelisted_private_attribute_and_its_creator_are_kept(
        self, study: list[pydicom.Dataset]
    ) -> None:
        safe = PrivateTag("DV SYNTH PRIVATE", 0x0009, 0x02)
        planted = pydicom.dcmread(io.BytesIO(encode(study[0])))
        planted.private_block(0x0009, "DV SYNTH PRIVATE")[0x02].value = "B30f KERNEL"
        out = make_engine(Profile(private_safelist=frozenset({safe}))).deidentify_bytes(
            encode(planted)
        )
        ds = out.dataset
        assert ds is not None
        block = ds.private_block(0x0009, "DV SYNTH PRIVATE")
        assert block[0x02].value == "B30f KERNEL"
        assert 0x00091001 not in ds and 0x00091010 not in ds
        codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
        assert "113111" in codes

    def test_a_safelisted_private_attribute_holding_the_patient_id_quarantines_the_instance(
        self, study: list[pydicom.Dataset]
    ) -> None:
        safe = PrivateTag("DV SYNTH PRIVATE", 0x0009, 0x02)  # planted with the patient ID
        engine = make_engine(Profile(private_safelist=frozenset({safe})))
        out = engine.deidentify_bytes(encode(study[0]))
        assert out.encoded is None and out.quarantine is not None
        assert out.quarantine.code == "residual-identifier"
        assert PATIENT.patient_id not in out.quarantine.message
