"""The synthetic series generator: valid, realistic and carrying the PHI it claims."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from dicom_ingest.synthetic import (
    SyntheticPatient,
    encode,
    main,
    make_ct_series,
    make_mr_series,
    write_series,
)


class TestSyntheticSeries:
    def test_a_512_slice_is_about_512_kib_and_reads_back(self) -> None:
        data = encode(next(make_ct_series(1)))
        assert 512 * 1024 < len(data) < 520 * 1024
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.pixel_array.shape == (512, 512) and ds.pixel_array.dtype.kind == "i"
        assert data[128:132] == b"DICM"

    def test_positions_step_by_slice_thickness_with_shared_uids(self) -> None:
        series = list(make_ct_series(4, rows=8, columns=8, slice_thickness=0.625))
        assert [float(ds.ImagePositionPatient[2]) for ds in series] == [0.0, -0.625, -1.25, -1.875]
        assert len({ds.SeriesInstanceUID for ds in series}) == 1
        assert len({ds.SOPInstanceUID for ds in series}) == 4
        assert len({ds.FrameOfReferenceUID for ds in series}) == 1

    def test_same_seed_same_series(self) -> None:
        first = [encode(ds) for ds in make_ct_series(2, rows=8, columns=8, seed=3)]
        again = [encode(ds) for ds in make_ct_series(2, rows=8, columns=8, seed=3)]
        assert first == again

    def test_mr_series_is_mr_image_storage(self) -> None:
        ds = next(make_mr_series(1, rows=8, columns=8))
        assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"

    def test_planted_series_carries_every_marker(self) -> None:
        data = encode(next(make_ct_series(1, rows=8, columns=8, plant_phi=True))).lower()
        missing = [m for m in SyntheticPatient().markers() if m.lower().encode() not in data]
        assert missing == []

    def test_generated_patients_differ(self) -> None:
        first, second = SyntheticPatient.generate(1), SyntheticPatient.generate(2)
        assert first.patient_id != second.patient_id and first.dicom_name != second.dicom_name

    def test_write_series_names_files_without_phi(self, tmp_path: Path) -> None:
        paths = write_series(tmp_path, make_ct_series(2, rows=8, columns=8, plant_phi=True))
        assert [p.name for p in paths] == ["IM000001.dcm", "IM000002.dcm"]

    def test_command_line_writes_a_series(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main([str(tmp_path), "--slices", "2", "--rows", "8", "--columns", "8", "--phi"]) == 0
        assert len(list(tmp_path.glob("*.dcm"))) == 2
        assert "wrote 2 instances" in capsys.readouterr().out
