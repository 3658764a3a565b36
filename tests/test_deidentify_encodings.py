"""The engine across transfer syntaxes and character sets: same guarantees everywhere."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.deidentify_support import leaks, make_engine

PATIENT = SyntheticPatient()
SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]


def _planted(syntax: str) -> tuple[pydicom.Dataset, bytes]:
    ds = next(make_ct_series(2, rows=16, columns=16, plant_phi=True, seed=4))
    ds.file_meta.TransferSyntaxUID = syntax
    return ds, encode(ds)


def _search_space(data: bytes) -> bytes:
    """The bytes to search: a deflated data set is searched inflated too."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID != DeflatedExplicitVRLittleEndian:
        return data
    buffer = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return data + buffer.getvalue()


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name)
class TestEveryTransferSyntax:
    def test_markers_are_planted_in_the_input(self, syntax: str) -> None:
        _, data = _planted(syntax)
        assert leaks(_search_space(data), [PATIENT.family_name, PATIENT.patient_id])

    def test_no_marker_survives(self, syntax: str) -> None:
        _, data = _planted(syntax)
        outcome = make_engine().deidentify_bytes(data)
        assert outcome.encoded is not None
        assert leaks(_search_space(outcome.encoded), PATIENT.markers()) == []

    def test_syntax_and_pixels_are_kept(self, syntax: str) -> None:
        ds, data = _planted(syntax)
        before = pydicom.dcmread(io.BytesIO(data))
        outcome = make_engine().deidentify_bytes(data)
        after = outcome.dataset
        assert after is not None
        assert after.file_meta.TransferSyntaxUID == syntax
        assert after.PixelData == before.PixelData
        assert after.ImagePositionPatient == ds.ImagePositionPatient
        assert after.StudyDate != ds.StudyDate and len(after.StudyDate) == 8


class TestCharacterSets:
    @pytest.mark.parametrize(
        ("charset", "family"),
        [("ISO_IR 192", "Qüuxleigh"), ("ISO_IR 100", "Qüuxleigh"), ("ISO_IR 144", "Куукслей")],
    )
    def test_non_ascii_names_leave_no_trace(self, charset: str, family: str) -> None:
        patient = SyntheticPatient(family_name=family)
        ds = next(make_ct_series(1, rows=8, columns=8, plant_phi=True, patient=patient))
        ds.SpecificCharacterSet = charset
        codec = {"ISO_IR 192": "utf-8", "ISO_IR 100": "latin-1", "ISO_IR 144": "iso8859-5"}
        data = encode(ds)
        assert family.encode(codec[charset]) in data
        outcome = make_engine().deidentify_bytes(data)
        assert outcome.encoded is not None
        assert family.encode(codec[charset]) not in outcome.encoded
        assert family.upper().encode(codec[charset]) not in outcome.encoded
        assert outcome.dataset is not None
        assert outcome.dataset.SeriesDescription == "AXIAL 1MM"
