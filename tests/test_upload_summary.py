"""The upload summary: series, thumbnails and the warnings that matter for implant design.

Studies are built through the one ingest pipeline into an embedded vault;
the summary reads their headers back through the decrypting reader.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import replace

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicom_ingest.summary import middle_instance, summarise
from dicom_ingest.summary_checks import PatientIdentity
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.catalog.models import Case

SMALL = {"rows": 32, "columns": 32}


def _ingest(case: CaseContext, datasets: Iterable[Dataset]) -> list[str]:
    return [
        case.pipeline.ingest(io.BytesIO(encode(ds)), case.origin).instance_id for ds in datasets
    ]


def _codes(summary: object) -> list[tuple[str, str | None]]:
    return [(w.code, w.series_id) for w in summary.warnings]  # type: ignore[attr-defined]


def _localisers(seed: int, series_number: int) -> list[Dataset]:
    """Three scout images in three orthogonal planes."""
    planes = ([1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, -1], [1, 0, 0, 0, 0, -1])
    datasets = list(make_ct_series(3, seed=seed, series_number=series_number, **SMALL))
    for ds, plane in zip(datasets, planes, strict=True):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.ImageOrientationPatient = plane
        ds.SeriesDescription = "SCOUT"
    return datasets


class TestSeries:
    def test_a_regular_ct_series_is_summarised_without_warnings(
        self, embedded_case: CaseContext
    ) -> None:
        ids = _ingest(embedded_case, make_ct_series(13, **SMALL))
        summary = summarise(embedded_case.vault, ids)
        assert summary.warnings == []
        [series] = summary.series
        assert series.modality == "CT"
        assert series.description == "AXIAL 1MM"
        assert series.images == 13
        assert series.slice_thickness_mm == 1.0
        assert series.pixel_spacing_mm == (pytest.approx(350 / 32), pytest.approx(350 / 32))
        assert series.middle_instance_id == ids[6]

    def test_the_thumbnail_instance_is_the_middle_slice_from_the_catalog_alone(
        self, embedded_case: CaseContext
    ) -> None:
        ids = _ingest(embedded_case, make_ct_series(9, **SMALL))
        series_id = summarise(embedded_case.vault, ids).series[0].series_id
        assert middle_instance(embedded_case.vault, ids, series_id) == ids[4]
        assert middle_instance(embedded_case.vault, ids, "0" * 32) is None

    def test_only_the_given_instances_are_summarised(self, embedded_case: CaseContext) -> None:
        first = _ingest(embedded_case, make_ct_series(5, seed=1, **SMALL))
        _ingest(embedded_case, make_ct_series(5, seed=2, series_number=2, **SMALL))
        summary = summarise(embedded_case.vault, [*first, "f" * 32])
        assert [s.images for s in summary.series] == [5]
        assert summarise(embedded_case.vault, []).series == []

    def test_series_are_listed_in_series_number_order(self, embedded_case: CaseContext) -> None:
        study = "1.2.826.0.1.3680043.8.498.77"
        later = _ingest(embedded_case, make_ct_series(5, series_number=3, study_uid=study, **SMALL))
        first = _ingest(
            embedded_case, make_ct_series(5, seed=5, series_number=2, study_uid=study, **SMALL)
        )
        summary = summarise(embedded_case.vault, [*later, *first])
        middles = [s.middle_instance_id for s in summary.series]
        assert middles == [first[2], later[2]]

    def test_an_enhanced_multiframe_image_counts_its_frames(
        self, embedded_case: CaseContext
    ) -> None:
        path = get_testdata_file("eCT_Supplemental.dcm")
        with open(str(path), "rb") as source:
            result = embedded_case.pipeline.ingest(source, embedded_case.origin)
        summary = summarise(embedded_case.vault, [result.instance_id])
        [series] = summary.series
        assert (series.modality, series.images, series.slice_thickness_mm) == ("CT", 2, 10.0)
        assert series.pixel_spacing_mm == (0.388672, 0.388672)
        assert _codes(summary) == [("slice-thickness", series.series_id)]


class TestThickness:
    def test_slices_thicker_than_the_limit_are_warned_about(
        self, embedded_case: CaseContext
    ) -> None:
        ids = _ingest(embedded_case, make_ct_series(6, slice_thickness=2.5, **SMALL))
        summary = summarise(embedded_case.vault, ids)
        [warning] = summary.warnings
        assert (warning.code, warning.series_id) == ("slice-thickness", summary.series[0].series_id)
        assert "2.5 mm thick" in warning.message and "1.25 mm" in warning.message

    def test_the_limit_is_configurable(self, embedded_case: CaseContext) -> None:
        ids = _ingest(embedded_case, make_ct_series(6, slice_thickness=2.5, **SMALL))
        assert summarise(embedded_case.vault, ids, max_slice_thickness_mm=3.0).warnings == []

    def test_thin_slices_spaced_too_far_apart_are_warned_about(
        self, embedded_case: CaseContext
    ) -> None:
        datasets = list(make_ct_series(6, slice_thickness=2.0, **SMALL))
        for ds in datasets:
            ds.SliceThickness = 1.0
        summary = summarise(embedded_case.vault, _ingest(embedded_case, datasets))
        [warning] = summary.warnings
        assert warning.code == "slice-spacing"
        assert "2 mm apart" in warning.message


class TestGaps:
    def test_missing_slices_are_counted_from_the_positions(
        self, embedded_case: CaseContext
    ) -> None:
        datasets = [ds for i, ds in enumerate(make_ct_series(20, **SMALL)) if i not in (7, 8)]
        summary = summarise(embedded_case.vault, _ingest(embedded_case, datasets))
        [warning] = summary.warnings  # the instance-number hole is the same gap
        assert warning.code == "slice-gap"
        assert warning.message.startswith("2 slices seem to be missing")
        assert "1 gap of up to 3 mm was found." in warning.message

    def test_irregular_spacing_is_warned_about(self, embedded_case: CaseContext) -> None:
        datasets = list(make_ct_series(10, **SMALL))
        x, y, z = (float(v) for v in datasets[5].ImagePositionPatient)
        datasets[5].ImagePositionPatient = [x, y, z + 0.3]
        summary = summarise(embedded_case.vault, _ingest(embedded_case, datasets))
        [warning] = summary.warnings
        assert warning.code == "irregular-spacing"
        assert "from 0.7 to 1.3 mm" in warning.message

    def test_a_hole_in_the_instance_numbers_is_warned_about(
        self, embedded_case: CaseContext
    ) -> None:
        datasets = list(make_ct_series(8, **SMALL))
        for index, ds in enumerate(datasets):
            ds.InstanceNumber = index + 1 if index < 4 else index + 2
        summary = summarise(embedded_case.vault, _ingest(embedded_case, datasets))
        [warning] = summary.warnings
        assert warning.code == "instance-number-gap"
        assert warning.message.startswith("1 image seems to be missing")
        assert "1 to 9" in warning.message

    def test_several_images_at_one_position_are_not_a_gap(self, embedded_case: CaseContext) -> None:
        datasets = list(make_ct_series(12, **SMALL))
        for index, ds in enumerate(datasets):  # two echoes per position
            x, y, _ = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, -float(index // 2)]
        assert summarise(embedded_case.vault, _ingest(embedded_case, datasets)).warnings == []


class TestLocaliser:
    def test_an_upload_of_localisers_only_is_warned_about(self, embedded_case: CaseContext) -> None:
        summary = summarise(embedded_case.vault, _ingest(embedded_case, _localisers(3, 1)))
        assert _codes(summary) == [("localiser-only", None)]
        assert "localiser" in summary.warnings[0].message

    def test_a_localiser_beside_the_scan_is_fine_and_not_checked_for_gaps(
        self, embedded_case: CaseContext
    ) -> None:
        study = "1.2.826.0.1.3680043.8.498.78"
        scouts = _localisers(3, 1)
        for ds in scouts:
            ds.StudyInstanceUID = study
        ids = _ingest(embedded_case, scouts)
        ids += _ingest(embedded_case, make_ct_series(5, series_number=2, study_uid=study, **SMALL))
        summary = summarise(embedded_case.vault, ids)
        assert summary.warnings == []
        assert [s.description for s in summary.series] == ["SCOUT", "AXIAL 1MM"]


class TestPatients:
    def _case_allowing_several_patients(self, case: CaseContext) -> None:
        with case.vault.catalog.session() as session:
            row = session.get(Case, case.case_id)
            assert row is not None
            row.allow_multiple_patients = True

    def test_two_patients_in_one_upload_are_warned_about_without_naming_either(
        self, embedded_case: CaseContext
    ) -> None:
        self._case_allowing_several_patients(embedded_case)
        other = replace(SyntheticPatient(), patient_id="ZZX0001234", family_name="Otherly")
        ids = _ingest(embedded_case, make_ct_series(4, **SMALL))
        ids += _ingest(embedded_case, make_ct_series(4, patient=other, seed=9, **SMALL))
        summary = summarise(embedded_case.vault, ids)
        assert _codes(summary) == [("mixed-patients", None)]
        message = summary.warnings[0].message
        assert "2 different patients" in message
        for patient in (SyntheticPatient(), other):
            assert patient.patient_id not in message
            assert patient.family_name not in message

    def test_two_studies_of_one_patient_are_fine(self, embedded_case: CaseContext) -> None:
        ids = _ingest(embedded_case, make_ct_series(4, seed=1, **SMALL))
        ids += _ingest(embedded_case, make_ct_series(4, seed=2, **SMALL))
        summary = summarise(embedded_case.vault, ids)
        assert len(summary.series) == 2
        assert summary.warnings == []


class TestIdentity:
    """Each series names its patient as the uploader can confirm them: initials, not names."""

    def test_a_series_gives_initials_birth_date_sex_and_study_date(
        self, embedded_case: CaseContext
    ) -> None:
        ids = _ingest(embedded_case, make_ct_series(3, **SMALL))
        [series] = summarise(embedded_case.vault, ids).series
        assert series.identity == PatientIdentity(
            initials="M. Q.", birth_date="1961-03-14", sex="F", study_date="2023-05-17"
        )

    def test_each_patient_of_a_mixed_upload_keeps_their_own_identity(
        self, embedded_case: CaseContext
    ) -> None:
        TestPatients()._case_allowing_several_patients(embedded_case)
        other = replace(
            SyntheticPatient(),
            patient_id="ZZX0001234",
            family_name="Otherly",
            given_name="Bertrand",
            birth_date="19700101",
            sex="M",
        )
        ids = _ingest(embedded_case, make_ct_series(3, series_number=1, **SMALL))
        ids += _ingest(embedded_case, make_ct_series(3, patient=other, seed=9, **SMALL))
        identities = [s.identity for s in summarise(embedded_case.vault, ids).series]
        assert {(i.initials, i.birth_date, i.sex) for i in identities if i} == {
            ("M. Q.", "1961-03-14", "F"),
            ("B. O.", "1970-01-01", "M"),
        }

    @pytest.mark.parametrize(
        ("name", "birth", "sex", "expected"),
        [
            ("", "", "", PatientIdentity(None, None, None, "2023-05-17")),
            ("DOE", "19610231", "X", PatientIdentity("D.", None, None, "2023-05-17")),
            ("^Émile", "1961.03.14", "m", PatientIdentity("É.", None, "M", "2023-05-17")),
            ("van Dijk^  jan", "196103", "O", PatientIdentity("J. V.", None, "O", "2023-05-17")),
        ],
    )
    def test_odd_or_missing_values_give_what_can_be_told_and_no_more(
        self, embedded_case: CaseContext, name: str, birth: str, sex: str, expected: object
    ) -> None:
        [ds] = make_ct_series(1, **SMALL)
        ds.PatientName, ds.PatientBirthDate, ds.PatientSex = name, birth, sex
        ds.SpecificCharacterSet = "ISO_IR 192"
        ids = _ingest(embedded_case, [ds])
        [series] = summarise(embedded_case.vault, ids).series
        assert series.identity == expected
