"""Every real-world test file is de-identified or quarantined with a reason; none crashes.

The corpus is pydicom's test files and the pydicom-data wheel (both returned
by ``pydicom.data.get_testdata_files()``). Outputs must be readable by
pydicom and by dcmtk's ``dcmdump``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import (
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

from deidentify import DeidOutcome
from dicom_ingest.synthetic import encode, make_ct_series
from tests.deidentify_support import make_engine, uids_of
from tests.services._require import missing_service


@cache
def corpus() -> tuple[Path, ...]:
    return tuple(sorted({Path(p) for p in get_testdata_files() if Path(p).is_file()}))


@cache
def outcomes() -> dict[Path, DeidOutcome]:
    engine = make_engine()
    return {path: engine.deidentify_bytes(path.read_bytes()) for path in corpus()}


def _has_pydicom_data() -> bool:
    return any("data_store" in p.parts for p in corpus())


class TestEveryTestFileIsHandled:
    def test_the_corpus_includes_both_sources(self) -> None:
        assert len(corpus()) > 200
        assert _has_pydicom_data()

    def test_each_file_is_deidentified_or_quarantined_with_a_reason(self) -> None:
        for outcome in outcomes().values():
            assert outcome.ok != (outcome.quarantine is not None)
            if outcome.quarantine is not None:
                assert outcome.quarantine.code and outcome.quarantine.message

    def test_most_images_are_deidentified(self) -> None:
        written = [o for o in outcomes().values() if o.ok]
        assert len(written) > 100

    def test_every_output_is_readable_by_pydicom_to_the_last_value(self) -> None:
        for outcome in outcomes().values():
            if outcome.encoded is None:
                continue
            ds = pydicom.dcmread(io.BytesIO(outcome.encoded))
            ds.walk(lambda _, elem: elem.value)
            assert ds.PatientIdentityRemoved == "YES"

    def test_no_original_uid_survives_in_any_output(self) -> None:
        for path, outcome in outcomes().items():
            if outcome.encoded is None:
                continue
            original = pydicom.dcmread(path, stop_before_pixels=True)
            survivors = [u for u in uids_of(original) if u.encode() in outcome.encoded]
            assert survivors == [], path.name

    def test_reasons_carry_no_file_data(self) -> None:
        for path, outcome in outcomes().items():
            if outcome.quarantine is not None and path.name != "DICOMDIR":  # the reason's word
                assert path.stem not in outcome.quarantine.message

    @pytest.mark.dcmtk
    def test_every_output_is_readable_by_dcmdump(self, tmp_path: Path) -> None:
        dcmdump = shutil.which("dcmdump")
        if dcmdump is None:
            missing_service("dcmtk", "dcmdump is not on PATH (apt-get install dcmtk)")
        paths = []
        for index, outcome in enumerate(outcomes().values()):
            if outcome.encoded is not None:
                path = tmp_path / f"{index}.dcm"
                path.write_bytes(outcome.encoded)
                paths.append(str(path))
        result = subprocess.run(
            [str(dcmdump), "-q", "+E", *paths], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr[:2000]
        assert "E:" not in result.stderr


def _image(**attributes: object) -> Dataset:
    ds = next(make_ct_series(1, rows=4, columns=4))
    for keyword, value in attributes.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    if "SOPClassUID" in attributes:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


class TestBurnedInTextIsQuarantined:
    def test_declared_burned_in_annotation_is_quarantined(self) -> None:
        outcome = make_engine().deidentify(_image(BurnedInAnnotation="YES"))
        assert outcome.quarantine is not None
        assert outcome.quarantine.code == "burned-in-annotation"
        assert outcome.encoded is None

    @pytest.mark.parametrize(
        "attributes",
        [
            {"Modality": "US", "SOPClassUID": UltrasoundImageStorage},
            {"Modality": "OT", "SOPClassUID": SecondaryCaptureImageStorage},
            {"Modality": "XA"},
            {"Modality": "RF"},
            {"ConversionType": "WSD"},
        ],
        ids=["ultrasound", "secondary-capture", "angiography", "fluoroscopy", "screen-capture"],
    )
    def test_risky_kind_without_a_declaration_is_quarantined(
        self, attributes: dict[str, object]
    ) -> None:
        outcome = make_engine().deidentify(_image(BurnedInAnnotation=None, **attributes))
        assert outcome.quarantine is not None
        assert outcome.quarantine.code == "burned-in-risk"

    def test_risky_kind_declared_clean_is_deidentified(self) -> None:
        outcome = make_engine().deidentify(_image(Modality="US", BurnedInAnnotation="NO"))
        assert outcome.ok

    def test_ct_without_a_declaration_is_deidentified(self) -> None:
        assert make_engine().deidentify(_image(BurnedInAnnotation=None)).ok

    def test_encapsulated_pdf_is_quarantined_whatever_it_declares(self) -> None:
        ds = _image(SOPClassUID=EncapsulatedPDFStorage, BurnedInAnnotation="NO")
        outcome = make_engine().deidentify(ds)
        assert outcome.quarantine is not None
        assert outcome.quarantine.code == "encapsulated-document"

    def test_overlay_in_the_pixel_bits_is_quarantined(self) -> None:
        ds = _image(BitsStored=12, HighBit=11)
        ds.add_new(0x60000100, "US", 1)
        ds.add_new(0x60000102, "US", 12)
        outcome = make_engine().deidentify(ds)
        assert outcome.quarantine is not None
        assert outcome.quarantine.code == "overlay-in-pixels"


class TestMalformedInputIsQuarantined:
    def test_bytes_that_are_not_dicom(self) -> None:
        outcome = make_engine().deidentify_bytes(b"PK\x03\x04 not a DICOM file" * 10)
        assert outcome.quarantine is not None and outcome.quarantine.code == "unreadable"

    @pytest.mark.parametrize("keep", [140, 400, 1000, -7])
    def test_truncated_file(self, keep: int) -> None:
        data = encode(next(make_ct_series(1, rows=16, columns=16, plant_phi=True)))
        outcome = make_engine().deidentify_bytes(data[:keep])
        assert outcome.quarantine is not None and outcome.quarantine.code == "unreadable"

    def test_element_length_past_the_end(self) -> None:
        data = bytearray(encode(next(make_ct_series(1, rows=4, columns=4))))
        index = data.index(b"\x10\x00\x10\x00PN")  # Patient's Name, explicit VR LE
        data[index + 6 : index + 8] = (0xFFF0).to_bytes(2, "little")
        outcome = make_engine().deidentify_bytes(bytes(data))
        assert outcome.quarantine is not None and outcome.quarantine.code == "unreadable"
