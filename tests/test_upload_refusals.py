"""Every refusal of the validation policy, through the upload API.

Each test checks the HTTP status and the reason, that nothing of the refused
file was stored (catalog rows, live data keys, held parts and store objects
as before it), that no plaintext of it is on disk (a random marker planted in
the file is searched in the vault's data directory and the system temporary
directory), and that the service still takes a good file afterwards. Files
are sent whole in one request and, where it makes a difference, in several
PATCH requests (then held encrypted until complete).
"""

from __future__ import annotations

import io
import logging
import secrets
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)

from dicom_ingest._synthetic_phi import SyntheticPatient
from dicom_ingest.synthetic import encode, make_ct_series
from tests.upload_support import (
    Uploader,
    UploadWorld,
    assert_no_plaintext,
    dicomdir_bytes,
    disk_roots,
    slice_bytes,
    stored_counts,
    upload_world,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[UploadWorld]:
    with upload_world(tmp_path / "data") as made:
        yield made


@pytest.fixture
def uploader(world: UploadWorld) -> Uploader:
    return world.uploader()


@pytest.fixture(params=[None, pytest.param("postgres", marks=pytest.mark.postgres)])
def on_each_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UploadWorld]:
    """An upload world on SQLite, then on PostgreSQL (for the upload limit's running total)."""
    url = request.getfixturevalue("postgres_url") if request.param else None
    with upload_world(tmp_path / "data", url) as made:
        yield made


def marked(marker: str, seed: int = 0, **kwargs: object) -> Dataset:
    ds = next(make_ct_series(1, rows=32, columns=32, seed=seed, **kwargs))  # type: ignore[arg-type]
    ds.ImageComments = marker
    return ds


def with_sop_class(marker: str) -> bytes:
    ds = marked(marker)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    return encode(ds)


def with_lossy_syntax(marker: str) -> bytes:
    ds = marked(marker)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    return encode(ds)


def with_deflated_syntax(marker: str) -> bytes:
    ds = marked(marker)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    # The data set is compressed: the marker the disk scan looks for rides in the file meta.
    ds.file_meta.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.8.498.1"
    ds.file_meta.PrivateInformation = marker.encode()
    return encode(ds)


def with_unknown_vr(marker: str) -> bytes:
    data = bytearray(encode(marked(marker)))
    position = data.find(b"\x08\x00\x16\x00UI")  # (0008,0016) SOP Class UID
    data[position + 4 : position + 6] = b"ZZ"
    return bytes(data)


def archive(entries: list[tuple[str, bytes, bool]]) -> bytes:
    """A ZIP of (name, data, deflated?) entries; names are taken as they are."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data, deflated in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
            zipped.writestr(info, data)
    return buffer.getvalue()


@dataclass(frozen=True)
class Refusal:
    make: Callable[[str], bytes]
    status: int
    reason: str
    kind: str = "dicom"


REFUSALS: dict[str, Refusal] = {
    "not-dicom": Refusal(lambda m: b"%PDF-1.7 " + m.encode() * 200, 415, "not-dicom"),
    "truncated": Refusal(lambda m: encode(marked(m))[:-100], 422, "truncated"),
    "corrupt-header": Refusal(with_unknown_vr, 422, "corrupt-header"),
    "sop-class-outside-policy": Refusal(with_sop_class, 415, "sop-class"),
    "transfer-syntax-outside-policy": Refusal(with_lossy_syntax, 415, "transfer-syntax"),
    "deflated": Refusal(with_deflated_syntax, 415, "transfer-syntax"),
    "zip-absolute-path": Refusal(
        lambda m: archive([("IM1", encode(marked(m)), False), ("/etc/IM2", b"x", False)]),
        422,
        "unsafe-archive",
        "zip",
    ),
    "zip-dotdot-path": Refusal(
        lambda m: archive([("IM1", encode(marked(m)), False), ("../../IM2", b"x", False)]),
        422,
        "unsafe-archive",
        "zip",
    ),
    "zip-bomb-ratio": Refusal(
        lambda m: archive([("IM1", encode(marked(m)), False), ("IM2", bytes(4 << 20), True)]),
        422,
        "unsafe-archive",
        "zip",
    ),
    "zip-dicomdir-pointing-outside": Refusal(
        lambda m: archive(
            [
                ("CD/DICOM/IM1", encode(marked(m)), False),
                ("CD/DICOMDIR", dicomdir_bytes([["..", "..", "ETC", "IM9"]]), False),
            ]
        ),
        422,
        "unsafe-archive",
        "zip",
    ),
    "dicomdir-pointing-outside": Refusal(
        lambda m: dicomdir_bytes([["DICOM", "IM1"], ["..", "IM2"]], marker=m),
        422,
        "unsafe-archive",
    ),
}


def send(
    uploader: Uploader, upload: dict[str, object], data: bytes, delivery: str, kind: str
) -> httpx.Response:
    if delivery == "whole":
        return uploader.send(upload, data, kind=kind)
    return uploader.send_in_chunks(upload, data, len(data) // 3 + 1, kind=kind)


def assert_refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert response.json()["detail"], "a refusal says why in plain words"
    assert response.headers["x-vault-outcome"] == "refused"


def assert_still_serves(uploader: Uploader, upload: dict[str, object], seed: int = 7) -> None:
    data = slice_bytes(seed, size=32)
    response = uploader.send(upload, data)
    assert response.status_code == 201
    assert response.headers["x-vault-outcome"] == "stored"


@pytest.mark.parametrize("delivery", ["whole", "chunked"])
@pytest.mark.parametrize("name", REFUSALS)
def test_refused_with_its_reason_nothing_stored_and_service_goes_on(
    world: UploadWorld,
    uploader: Uploader,
    name: str,
    delivery: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dicom_ingest")
    refusal = REFUSALS[name]
    marker = f"MARK{secrets.token_hex(8)}"
    data = refusal.make(marker)
    assert marker.encode() in data
    upload = uploader.new_upload(world.case_id)
    before = stored_counts(world.vault)
    started = time.time()
    response = send(uploader, upload, data, delivery, refusal.kind)
    assert_refused(response, refusal.status, refusal.reason)
    assert stored_counts(world.vault) == before
    assert_no_plaintext(marker.encode(), disk_roots(world.vault), started)
    result = uploader.result(response.headers["location"])
    assert result["state"] == "refused"
    assert result["refused"][0]["error"] == refusal.reason
    assert f"refused ({refusal.reason})" in caplog.text  # the operational log says so
    assert marker not in caplog.text
    assert_still_serves(uploader, upload)


def test_the_completed_upload_is_summed_up_in_the_operational_log(
    world: UploadWorld, uploader: Uploader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dicom_ingest")
    upload = uploader.new_upload(world.case_id)
    assert uploader.send(upload, slice_bytes(3, size=32)).status_code == 201
    assert uploader.send(upload, b"not a DICOM file at all").status_code == 415
    assert uploader.complete(upload).status_code == 200
    summary = f"upload {upload['upload_id']} completed: 2 files (1 stored, 1 refused)"
    assert summary in caplog.text
    assert "; 0 discarded; 1 studies" in caplog.text


def test_a_conflicting_resend_is_refused(world: UploadWorld, uploader: Uploader) -> None:
    upload = uploader.new_upload(world.case_id)
    first = marked("first version")
    assert uploader.send(upload, encode(first)).headers["x-vault-outcome"] == "stored"
    marker = f"MARK{secrets.token_hex(8)}"
    first.ImageComments = marker  # same SOP Instance UID, other bytes
    before = stored_counts(world.vault)
    started = time.time()
    response = uploader.send(upload, encode(first))
    assert_refused(response, 409, "conflict")
    assert stored_counts(world.vault) == before
    assert_no_plaintext(marker.encode(), disk_roots(world.vault), started)
    assert_still_serves(uploader, upload)


def test_a_second_patient_in_a_case_is_refused(world: UploadWorld, uploader: Uploader) -> None:
    upload = uploader.new_upload(world.case_id)
    assert uploader.send(upload, encode(marked("patient one"))).status_code == 201
    marker = f"MARK{secrets.token_hex(8)}"
    other = SyntheticPatient(patient_id="OTHERPATIENT2", family_name="Otherson")
    before = stored_counts(world.vault)
    started = time.time()
    response = uploader.send(upload, encode(marked(marker, seed=5, patient=other)))
    assert_refused(response, 422, "policy")
    assert stored_counts(world.vault) == before
    assert_no_plaintext(marker.encode(), disk_roots(world.vault), started)
    assert_still_serves(uploader, upload)


def test_a_file_above_the_size_limit_is_refused_before_any_byte(
    world: UploadWorld, uploader: Uploader
) -> None:
    limit = world.vault.settings.limits.max_file_bytes
    upload = uploader.new_upload(world.case_id)
    before = stored_counts(world.vault)
    response = uploader.create(upload, limit + 1)
    assert response.status_code == 413
    assert response.json()["error"] == "too-large"
    assert stored_counts(world.vault) == before
    assert uploader.get(f"/api/uploads/{upload['upload_id']}").json()["files"]["total"] == 0
    assert_still_serves(uploader, upload)


def test_bytes_beyond_the_declared_length_are_refused_while_streaming(
    world: UploadWorld, uploader: Uploader
) -> None:
    data = slice_bytes()
    upload = uploader.new_upload(world.case_id)
    url = uploader.create(upload, len(data) - 10).headers["location"]
    before = stored_counts(world.vault)
    response = uploader.patch(url, 0, data)
    assert response.status_code == 413
    assert response.json()["error"] == "too-large"
    assert stored_counts(world.vault) == before
    assert_still_serves(uploader, upload)


def test_an_upload_above_the_per_upload_limit_is_refused(
    world: UploadWorld, uploader: Uploader
) -> None:
    data = slice_bytes()
    world.vault.settings.limits.max_upload_bytes = 2 * len(data) + 10
    upload = uploader.new_upload(world.case_id)
    assert uploader.send(upload, data).status_code == 201
    assert uploader.create(upload, len(data)).status_code == 201
    before = stored_counts(world.vault)
    response = uploader.create(upload, len(data))
    assert response.status_code == 413
    assert response.json()["error"] == "too-large"
    assert "upload" in response.json()["detail"]
    assert stored_counts(world.vault) == before
    other = uploader.new_upload(world.case_id)
    assert_still_serves(uploader, other)


def test_a_withdrawn_file_no_longer_counts_towards_the_upload_limit(
    on_each_catalog: UploadWorld,
) -> None:
    world = on_each_catalog
    uploader = world.uploader()
    data = slice_bytes()
    world.vault.settings.limits.max_upload_bytes = 2 * len(data) + 10
    upload = uploader.new_upload(world.case_id)
    assert uploader.send(upload, data).status_code == 201
    waiting = uploader.create(upload, len(data))
    assert waiting.status_code == 201
    assert uploader.create(upload, len(data)).status_code == 413
    withdrawn = uploader.client.delete(waiting.headers["location"], headers=uploader.tus())
    assert withdrawn.status_code == 204
    again = uploader.send(upload, slice_bytes(seed=3))
    assert again.status_code == 201, again.text
    assert uploader.create(upload, len(data)).status_code == 413


def test_the_upload_limit_counts_every_file_sent_whole_or_resumable(
    on_each_catalog: UploadWorld,
) -> None:
    world = on_each_catalog
    uploader = world.uploader()
    sizes = [len(slice_bytes(seed=seed)) for seed in range(4)]
    world.vault.settings.limits.max_upload_bytes = sum(sizes) + 10
    upload = uploader.new_upload(world.case_id)
    assert uploader.send(upload, slice_bytes(seed=0)).status_code == 201
    assert uploader.create(upload, sizes[1]).status_code == 201
    assert uploader.send_in_chunks(upload, slice_bytes(seed=2), 1000).status_code == 204
    assert uploader.send(upload, slice_bytes(seed=3)).status_code == 201
    response = uploader.create(upload, 11)
    assert response.status_code == 413
    assert response.json()["error"] == "too-large"
    assert uploader.create(upload, 10).status_code == 201


def test_a_zip_expanding_over_the_total_size_limit_is_refused(
    world: UploadWorld, uploader: Uploader
) -> None:
    marker = f"MARK{secrets.token_hex(8)}"
    rng = np.random.default_rng(1)
    filler = rng.choice(np.array([0x20, 0x41], dtype=np.uint8), size=3 << 20).tobytes()
    data = archive([("IM1", encode(marked(marker)), False), ("IM2", filler, True)])
    world.vault.settings.limits.max_upload_bytes = 1 << 20
    assert len(data) < 1 << 20
    upload = uploader.new_upload(world.case_id)
    before = stored_counts(world.vault)
    started = time.time()
    response = uploader.send(upload, data, kind="zip")
    assert_refused(response, 413, "too-large")
    assert stored_counts(world.vault) == before
    assert_no_plaintext(marker.encode(), disk_roots(world.vault), started)
    assert_still_serves(uploader, uploader.new_upload(world.case_id))


SKIPPED: dict[str, tuple[Callable[[], bytes], dict[str, str]]] = {
    "dicomdir-by-content": (lambda: dicomdir_bytes([["DICOM", "IM1"]]), {}),
    "dicomdir-by-name": (lambda: dicomdir_bytes([["DICOM", "IM1"]]), {"filename": "DICOMDIR"}),
    "ds-store": (lambda: b"\x00\x00\x00\x01Bud1" + bytes(64), {"filename": ".DS_Store"}),
    "thumbs-db": (lambda: b"\xd0\xcf\x11\xe0" + bytes(64), {"filename": "Thumbs.db"}),
}


@pytest.mark.parametrize("name", SKIPPED)
def test_dicomdir_and_os_junk_are_skipped_quietly(
    world: UploadWorld, uploader: Uploader, name: str
) -> None:
    make, meta = SKIPPED[name]
    upload = uploader.new_upload(world.case_id)
    before = stored_counts(world.vault)
    response = uploader.send(upload, make(), **meta)
    assert response.status_code == 201
    assert response.headers["x-vault-outcome"] == "skipped"
    assert uploader.result(response.headers["location"])["refused"] == []
    assert stored_counts(world.vault) == before
    assert_still_serves(uploader, upload)


def test_dicomdir_and_junk_inside_a_zip_are_skipped_quietly(
    world: UploadWorld, uploader: Uploader
) -> None:
    data = archive(
        [
            ("CD/DICOMDIR", dicomdir_bytes([["DICOM", "IM1"]]), False),
            ("CD/DICOM/IM1", slice_bytes(3), True),
            ("CD/.DS_Store", b"\x00\x00\x00\x01Bud1", False),
            ("Thumbs.db", b"\xd0\xcf\x11\xe0", False),
        ]
    )
    upload = uploader.new_upload(world.case_id)
    response = uploader.send(upload, data, kind="zip")
    assert response.headers["x-vault-outcome"] == "stored"
    result = uploader.result(response.headers["location"])
    assert (result["stored"], result["refused"]) == (1, [])


def test_the_plaintext_check_finds_a_planted_marker(tmp_path: Path) -> None:
    marker = f"MARK{secrets.token_hex(8)}".encode()
    started = time.time()
    (tmp_path / "leak.bin").write_bytes(b"header" + marker + b"trailer")
    with pytest.raises(AssertionError):
        assert_no_plaintext(marker, [tmp_path], started)
