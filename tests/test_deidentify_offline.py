"""Offline de-identification of files and folders: outputs, quarantine and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from deidentify import Profile, PseudonymKeys
from deidentify.offline import REPORT_NAME, deidentify_paths, run
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series, write_series
from tests.deidentify_support import FixedMacKey, leaks

PATIENT = SyntheticPatient()


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder with a planted CT series, a nested second series, an US image and a note."""
    root = tmp_path / "in" / PATIENT.family_name  # a folder named after the patient
    write_series(root / "ct", make_ct_series(3, rows=16, columns=16, plant_phi=True))
    write_series(root / "ct" / "scout", make_ct_series(1, rows=16, columns=16, series_number=9))
    us = next(make_ct_series(1, rows=16, columns=16, seed=5))
    us.Modality = "US"
    del us.BurnedInAnnotation
    (root / "us.dcm").write_bytes(encode(us))
    (root / "notes.txt").write_text(f"patient {PATIENT.dicom_name}")
    return tmp_path / "in"


class TestOfflineRun:
    def test_images_are_written_and_the_rest_quarantined(
        self, inputs: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        summary = deidentify_paths(
            [inputs], out, profile=Profile(), keys=PseudonymKeys(FixedMacKey())
        )
        assert len(summary.written) == 4
        assert summary.quarantine_counts() == {"burned-in-risk": 1, "unreadable": 1}
        assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(summary.written)

    def test_output_paths_and_bytes_carry_no_identifier(self, inputs: Path, tmp_path: Path) -> None:
        out = tmp_path / "out"
        summary = run([inputs], out, mac_key=FixedMacKey(), report=True)
        for path in summary.written:
            relative = str(path.relative_to(out))
            assert leaks(relative.encode(), PATIENT.markers()) == []
            assert relative.startswith("PSN-")
            assert leaks(path.read_bytes(), PATIENT.markers()) == []
            assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"

    def test_one_patient_lands_in_one_pseudonym_folder(self, inputs: Path, tmp_path: Path) -> None:
        out = tmp_path / "out"
        run([inputs], out, mac_key=FixedMacKey())
        assert len([p for p in out.iterdir() if p.is_dir()]) == 1

    def test_report_counts_actions_per_attribute_without_values(
        self, inputs: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        summary = run([inputs], out, mac_key=FixedMacKey(), report=True)
        assert summary.report_path == out / REPORT_NAME
        text = summary.report_path.read_text()
        report = json.loads(text)
        assert report["instances_written"] == 4
        assert report["pseudonym_key_id"] == "test-1"
        assert report["attributes"]["(0010,0010) PatientName"] == {"replaced": 4}
        assert report["attributes"]["(7FE0,0010) PixelData"] == {"kept": 4}
        assert report["attributes"]["(0010,1040) PatientAddress"] == {"removed": 3}
        assert leaks(text.encode(), PATIENT.markers()) == []

    def test_no_report_unless_asked(self, inputs: Path, tmp_path: Path) -> None:
        summary = run([inputs], tmp_path / "out", mac_key=FixedMacKey())
        assert summary.report_path is None
        assert not (tmp_path / "out" / REPORT_NAME).exists()

    def test_single_files_are_accepted_and_large_ones_skipped(
        self, inputs: Path, tmp_path: Path
    ) -> None:
        one = next((inputs).rglob("IM000001.dcm"))
        summary = deidentify_paths(
            [one],
            tmp_path / "out",
            profile=Profile(),
            keys=PseudonymKeys(FixedMacKey()),
            max_file_bytes=100,
        )
        assert summary.skipped == [one] and summary.written == []
