"""Bad input gets a clear refusal, nothing of it is stored, and ingest goes on."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage
from sqlalchemy import func, select

from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.catalog.models import DataKeyRecord, Instance, Study
from vault.errors import (
    CorruptHeader,
    MissingAttribute,
    NotDicom,
    SopClassRefused,
    TooLarge,
    TransferSyntaxRefused,
    TruncatedFile,
    VaultError,
    dimse_error_comment,
    dimse_status,
    http_status,
)


def slice_dataset(seed: int = 0) -> Dataset:
    return next(make_ct_series(1, rows=32, columns=32, seed=seed))


def good_file(seed: int = 0) -> bytes:
    return encode(slice_dataset(seed))


def without(keyword: str) -> bytes:
    ds = slice_dataset()
    delattr(ds, keyword)
    return encode(ds)


def with_sop_class(uid: str) -> bytes:
    ds = slice_dataset()
    ds.SOPClassUID = uid
    ds.file_meta.MediaStorageSOPClassUID = uid
    return encode(ds)


def with_transfer_syntax(uid: str) -> bytes:
    """A slice declared in a compressed syntax (the fragment need not decode)."""
    ds = slice_dataset()
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    return encode(ds)


def _sop_class_element(data: bytearray) -> int:
    return data.find(b"\x08\x00\x16\x00UI")  # (0008,0016) SOP Class UID in the data set


def unknown_vr() -> bytes:
    data = bytearray(good_file())
    position = _sop_class_element(data)
    data[position + 4 : position + 6] = b"ZZ"
    return bytes(data)


def absurd_length() -> bytes:
    data = bytearray(good_file())
    position = _sop_class_element(data)
    data[position + 6 : position + 8] = b"\xff\xff"
    return bytes(data)


REFUSALS: dict[str, tuple[Callable[[], bytes], type[VaultError], int, int]] = {
    "not-dicom": (lambda: b"%PDF-1.7 this is a report, not an image" * 50, NotDicom, 415, 0xC000),
    "empty-file": (lambda: b"", NotDicom, 415, 0xC000),
    "no-dicm-marker": (lambda: bytes(128) + b"XXXX" + good_file()[132:], NotDicom, 415, 0xC000),
    "truncated-in-header": (lambda: good_file()[:400], TruncatedFile, 422, 0xC000),
    "truncated-in-pixels": (lambda: good_file()[:-100], TruncatedFile, 422, 0xC000),
    "unknown-vr": (unknown_vr, CorruptHeader, 422, 0xC000),
    "absurd-value-length": (absurd_length, CorruptHeader, 422, 0xC000),
    "no-sop-instance-uid": (lambda: without("SOPInstanceUID"), MissingAttribute, 422, 0xA900),
    "no-study-uid": (lambda: without("StudyInstanceUID"), MissingAttribute, 422, 0xA900),
    "no-pixel-data": (lambda: without("PixelData"), MissingAttribute, 422, 0xA900),
    "secondary-capture": (
        lambda: with_sop_class(SecondaryCaptureImageStorage),
        SopClassRefused,
        415,
        0x0122,
    ),
    "lossy-transfer-syntax": (
        lambda: with_transfer_syntax(JPEGBaseline8Bit),
        TransferSyntaxRefused,
        415,
        0xA900,
    ),
}


def stored_counts(case: CaseContext) -> tuple[int, int, int, int]:
    with case.vault.catalog.session() as session:
        counts = tuple(
            session.scalar(select(func.count()).select_from(model))
            for model in (Study, Instance, DataKeyRecord)
        )
    return (*counts, len(list(case.vault.store.iter_keys())))


@pytest.mark.parametrize("kind", REFUSALS)
class TestRefusedInput:
    def test_refused_with_reason_and_nothing_stored(
        self, embedded_case: CaseContext, kind: str
    ) -> None:
        make, error, http, dimse = REFUSALS[kind]
        with pytest.raises(error) as caught:
            embedded_case.pipeline.ingest(io.BytesIO(make()), embedded_case.origin)
        assert str(caught.value), "a refusal says why"
        assert (http_status(caught.value), dimse_status(caught.value)) == (http, dimse)
        assert stored_counts(embedded_case) == (0, 0, 0, 0)

    def test_ingest_goes_on_after_the_refusal(self, embedded_case: CaseContext, kind: str) -> None:
        make, error, _, _ = REFUSALS[kind]
        with pytest.raises(error):
            embedded_case.pipeline.ingest(io.BytesIO(make()), embedded_case.origin)
        embedded_case.pipeline.ingest(io.BytesIO(good_file(seed=9)), embedded_case.origin)
        assert stored_counts(embedded_case) == (1, 1, 1, 1)


class TestRefusalMessages:
    def test_messages_carry_no_attribute_values(self, embedded_case: CaseContext) -> None:
        ds = slice_dataset()
        ds.PatientName = "Zyxwvut^Quorra"
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        with pytest.raises(SopClassRefused) as caught:
            embedded_case.pipeline.ingest(io.BytesIO(encode(ds)), embedded_case.origin)
        assert "Zyxwvut" not in str(caught.value)
        assert str(ds.SOPInstanceUID) not in str(caught.value)

    def test_a_transfer_syntax_that_is_not_a_uid_is_not_quoted(
        self, embedded_case: CaseContext
    ) -> None:
        marker = b"Zyxwvut^Quorra 1961abc"  # as long as the UID it replaces
        data = with_transfer_syntax(JPEGBaseline8Bit).replace(JPEGBaseline8Bit.encode(), marker, 1)
        with pytest.raises(TransferSyntaxRefused) as caught:
            embedded_case.pipeline.ingest(io.BytesIO(data), embedded_case.origin)
        assert "Zyxwvut" not in str(caught.value)
        assert str(caught.value) == "the encoding (unknown) is not accepted"
        assert stored_counts(embedded_case) == (0, 0, 0, 0)


class TestLimits:
    def test_file_over_the_size_limit_is_refused(self, embedded_case: CaseContext) -> None:
        data = good_file()
        embedded_case.vault.settings.limits.max_file_bytes = len(data) - 1
        with pytest.raises(TooLarge):
            embedded_case.pipeline.ingest(io.BytesIO(data), embedded_case.origin)
        assert stored_counts(embedded_case) == (0, 0, 0, 0)


class TestRealWorldFiles:
    @pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
    def test_vendor_files_are_accepted_and_read_back(
        self, embedded_case: CaseContext, name: str
    ) -> None:
        data = Path(get_testdata_file(name)).read_bytes()
        result = embedded_case.pipeline.ingest(io.BytesIO(data), embedded_case.origin)
        from vault.reader import open_instance

        with open_instance(embedded_case.vault, result.instance_id) as stream:
            assert stream.read() == data

    def test_compressed_lossless_file_is_accepted_and_truncation_detected(
        self, embedded_case: CaseContext
    ) -> None:
        path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
        data = Path(path).read_bytes()
        sop_class = pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID
        assert sop_class in embedded_case.vault.settings.policy.sop_classes
        cut = data.rfind(b"\xfe\xff\xdd\xe0") - 10  # inside the last fragment
        with pytest.raises(TruncatedFile):
            embedded_case.pipeline.ingest(io.BytesIO(data[:cut]), embedded_case.origin)
        embedded_case.pipeline.ingest(io.BytesIO(data), embedded_case.origin)
        assert stored_counts(embedded_case)[1] == 1


class TestErrorComments:
    def test_a_long_reason_is_cut_to_the_64_characters_of_an_error_comment(self) -> None:
        long = CorruptHeader("the DICOM header has an element that cannot be decoded, twice over")
        comment = dimse_error_comment(long)
        assert len(comment) == 64 and comment.endswith("...") and comment.isascii()
        assert dimse_error_comment(TooLarge("too big")) == "too big"
