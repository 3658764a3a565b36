"""A resent instance: the same instance in other bytes is a duplicate, another one a conflict.

The same SOP instance reaches the vault twice in real use: a study uploaded
from a CD and then pushed by the hospital's PACS (each writes its own file
meta), or a PACS that resends in another transfer syntax. Each test ingests
through the one pipeline and checks what was stored.
"""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, RLELossless
from sqlalchemy import func, select

from dicom_ingest import pipeline as pipeline_module
from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.catalog.models import Instance
from vault.errors import ConflictingResend


def _slice(seed: int = 0) -> Dataset:
    return next(iter(make_ct_series(1, rows=32, columns=32, seed=seed)))


def _ingest(case: CaseContext, data: bytes) -> bool:
    """Ingest ``data``; whether it was taken as a duplicate."""
    return case.pipeline.ingest(io.BytesIO(data), case.origin).duplicate


def _instances(case: CaseContext) -> int:
    with case.vault.catalog.session() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def _with_other_meta(ds: Dataset) -> Dataset:
    ds.file_meta.ImplementationVersionName = "OTHER_WRITER_2"
    ds.file_meta.SourceApplicationEntityTitle = "PACS1"
    return ds


def _implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _rle(ds: Dataset) -> Dataset:
    ds.compress(RLELossless, generate_instance_uid=False)
    return ds


SAME_INSTANCE = {"other file meta": _with_other_meta, "implicit VR": _implicit, "RLE": _rle}


@pytest.mark.parametrize("name", SAME_INSTANCE)
def test_the_same_instance_in_other_bytes_is_a_duplicate(
    embedded_case: CaseContext, name: str
) -> None:
    original = _slice()
    first = encode(original)
    assert not _ingest(embedded_case, first)
    objects = sorted(embedded_case.vault.store.iter_keys())
    again = encode(SAME_INSTANCE[name](_slice()))
    assert again != first
    assert _ingest(embedded_case, again)
    assert _instances(embedded_case) == 1
    assert sorted(embedded_case.vault.store.iter_keys()) == objects


def _other_pixels(ds: Dataset) -> Dataset:
    ds.PixelData = bytes(len(ds.PixelData))
    return _implicit(ds)


def _other_header(ds: Dataset) -> Dataset:
    ds.ImageComments = "another version"
    return _with_other_meta(ds)


OTHER_INSTANCE = {"other pixels, implicit VR": _other_pixels, "other header": _other_header}


@pytest.mark.parametrize("name", OTHER_INSTANCE)
def test_another_instance_under_the_same_uid_is_a_conflict(
    embedded_case: CaseContext, name: str
) -> None:
    assert not _ingest(embedded_case, encode(_slice()))
    objects = sorted(embedded_case.vault.store.iter_keys())
    with pytest.raises(ConflictingResend):
        _ingest(embedded_case, encode(OTHER_INSTANCE[name](_slice())))
    assert _instances(embedded_case) == 1
    assert sorted(embedded_case.vault.store.iter_keys()) == objects


def test_a_resend_too_large_to_compare_stays_a_conflict(
    embedded_case: CaseContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not _ingest(embedded_case, encode(_slice()))
    monkeypatch.setattr(pipeline_module, "COMPARE_LIMIT_BYTES", 1000)
    with pytest.raises(ConflictingResend):
        _ingest(embedded_case, encode(_with_other_meta(_slice())))
    assert _instances(embedded_case) == 1
