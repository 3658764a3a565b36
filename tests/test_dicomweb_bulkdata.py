"""WADO-RS frames, bulk data and BulkDataURIs, on real multi-frame files, against a real server.

Two of pydicom's test files, a native 10-frame Enhanced MR (``emri_small.dcm``)
and the same frames in JPEG-LS Lossless (``emri_small_jpeg_ls_lossless.dcm``),
are given fresh UIDs and a patient, ingested through the one pipeline into a
case assigned to the engineer, and pseudonymised by the real
de-identification pipeline. Every expected byte is read by pydicom from the
pseudonymised copy as WADO-RS serves it whole, so a frame or a value is
compared with what the engineer's own copy holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.engineer_support import (
    World,
    assign,
    engineer_world,
    events,
    ingest,
    pseudo_study,
    pseudonymise,
    served_copies,
    serving,
    wado_parts,
)
from tests.services.auth_env import BASE_URL, START
from tests.services.vault_env import make_case
from vault.api.app import create_app
from vault.clock import FrozenClock
from vault.wado_bulk import MAX_FRAMES, MAX_STEPS_BACK

NATIVE, JPEG_LS = "emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"
FRAMES = 10


def _real_study(names: tuple[str, ...]) -> list[Dataset]:
    """The test files as one study of one patient, each with fresh UIDs."""
    study_uid, datasets = generate_uid(), []
    for number, name in enumerate(names, start=1):
        dataset = dcmread(get_testdata_file(name))
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.PatientName, dataset.PatientID = "Bulk^Frames", "BULK-0001"
        dataset.PatientBirthDate, dataset.StudyDate = "19700101", "20240102"
        dataset.SeriesNumber = number
        dataset.RedPaletteColorLookupTableData = bytes(range(256)) * 8  # 2 KiB of OW: bulk
        datasets.append(dataset)
    return datasets


@dataclass
class Instance:
    """One served instance: its WADO-RS path and the pseudonymised copy as served."""

    path: str
    copy: Dataset

    def frames(self) -> list[bytes]:
        """The copy's frames as pydicom reads them."""
        if self.copy.file_meta.TransferSyntaxUID.is_encapsulated:
            return list(generate_frames(self.copy.PixelData, number_of_frames=FRAMES))
        size = len(self.copy.PixelData) // FRAMES
        return [self.copy.PixelData[i * size : (i + 1) * size] for i in range(FRAMES)]


@dataclass
class Bulk:
    world: World
    url: str
    study_uid: str
    native: Instance
    jpeg_ls: Instance

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token or self.world.token}", **headers}
        with httpx.Client(base_url=self.url, headers=auth, timeout=60) as http:
            return http.get(path)

    def parts(self, path: str, accept: str | None = None) -> list[bytes]:
        """The parts of a multipart answer, split by dicomweb-client's own decoder."""
        headers = self.world.bearer()
        if accept:
            headers["Accept"] = accept
        return wado_parts(self.url, path, headers)

    def client(self, token: str | None = None) -> DICOMwebClient:
        headers = {"Authorization": f"Bearer {token or self.world.token}"}
        return DICOMwebClient(url=f"{self.url}/dicomweb", headers=headers)


def _instances(bulk_world: World, study: str, url: str) -> dict[str, Instance]:
    return {
        JPEG_LS if copy.file_meta.TransferSyntaxUID.is_encapsulated else NATIVE: Instance(
            path, copy
        )
        for path, copy in served_copies(bulk_world, study, url)
    }


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bulk]:
    with engineer_world(tmp_path_factory.mktemp("bulkdata") / "data", "BD-CASE") as world:
        case = make_case(world.vault, "BD-CASE-3")
        assign(world.vault, case.case_id, world.engineer)
        study = pseudonymise(world.vault, ingest(case, _real_study((NATIVE, JPEG_LS))))
        with serving(world.vault) as url:
            found = _instances(world, study, url)
            uid = str(pseudo_study(world.vault, study).pseudo_study_uid)
            yield Bulk(world, url, uid, found[NATIVE], found[JPEG_LS])


def _uri(bulk: Bulk, instance: Instance, tag: str = "7FE00010") -> str:
    (metadata,) = bulk.get(f"{instance.path}/metadata").json()
    return metadata[tag]["BulkDataURI"]


class TestMetadataBulkDataUri:
    def test_pixel_data_has_a_bulkdata_uri_under_the_pseudonymised_uids(self, bulk: Bulk) -> None:
        uri = _uri(bulk, bulk.native)
        assert uri == f"{bulk.url}{bulk.native.path}/bulkdata/7FE00010"
        originals = {ds.SOPInstanceUID for ds in bulk.world.originals}
        assert bulk.native.copy.SOPInstanceUID not in originals
        assert bulk.native.copy.PatientID != "BULK-0001"

    def test_the_native_pixel_data_uri_returns_the_copys_exact_value(self, bulk: Bulk) -> None:
        (value,) = bulk.parts(_uri(bulk, bulk.native).removeprefix(bulk.url))
        assert value == bulk.native.copy.PixelData

    def test_encapsulated_pixel_data_uri_returns_each_frame_as_stored(self, bulk: Bulk) -> None:
        parts = bulk.parts(_uri(bulk, bulk.jpeg_ls).removeprefix(bulk.url))
        assert parts == bulk.jpeg_ls.frames()

    def test_a_large_binary_value_is_a_bulkdata_uri_returning_its_bytes(self, bulk: Bulk) -> None:
        (metadata,) = bulk.get(f"{bulk.native.path}/metadata").json()
        uri = metadata["00281201"]["BulkDataURI"]
        assert uri == f"{bulk.url}{bulk.native.path}/bulkdata/00281201"
        (value,) = bulk.parts(uri.removeprefix(bulk.url))
        assert value == bulk.native.copy.RedPaletteColorLookupTableData
        inline = [key for key, item in metadata.items() if "InlineBinary" in item]
        assert all(len(bulk.native.copy[int(key, 16)].value) <= 1024 for key in inline)

    def test_an_attribute_that_is_not_there_is_not_found(self, bulk: Bulk) -> None:
        for path in ("00281202", "00281201.0.00281201", "7FE00008"):
            response = bulk.get(f"{bulk.native.path}/bulkdata/{path}")
            assert response.status_code == 404, path

    def test_the_public_url_setting_names_the_host_of_every_uri(self, bulk: Bulk) -> None:
        settings = bulk.world.vault.settings
        public = settings.model_copy(
            update={"api": settings.api.model_copy(update={"public_url": "https://vault.example/"})}
        )
        app = create_app(public, clock=FrozenClock(START))
        with TestClient(app, base_url=BASE_URL) as client:
            headers = bulk.world.bearer()
            (metadata,) = client.get(f"{bulk.native.path}/metadata", headers=headers).json()
            found = client.get("/dicomweb/studies", headers=headers).json()
        expected = f"https://vault.example{bulk.native.path}/bulkdata/7FE00010"
        assert metadata["7FE00010"]["BulkDataURI"] == expected
        assert {item["00081190"]["Value"][0].split("/studies/")[0] for item in found} == {
            "https://vault.example/dicomweb"
        }


class TestFrames:
    def test_native_frames_are_the_copys_pixel_bytes_in_list_order(self, bulk: Bulk) -> None:
        parts = bulk.parts(f"{bulk.native.path}/frames/3,1,10,3")
        frames = bulk.native.frames()
        assert parts == [frames[2], frames[0], frames[9], frames[2]]

    def test_encapsulated_frames_are_the_copys_codestreams(self, bulk: Bulk) -> None:
        parts = bulk.parts(f"{bulk.jpeg_ls.path}/frames/2,7,1")
        frames = bulk.jpeg_ls.frames()
        assert parts == [frames[1], frames[6], frames[0]]

    def test_encapsulated_parts_name_their_media_type_and_syntax(self, bulk: Bulk) -> None:
        response = bulk.get(f"{bulk.jpeg_ls.path}/frames/1")
        assert response.headers["content-type"].startswith('multipart/related; type="image/jls"')
        assert b"Content-Type: image/jls; transfer-syntax=1.2.840.10008.1.2.4.80" in (
            response.content
        )

    @pytest.mark.parametrize(
        ("accept", "status"),
        [
            ('multipart/related; type="image/jls"', 200),
            ('multipart/related; type="application/octet-stream"; transfer-syntax=*', 200),
            ('multipart/related; type="application/octet-stream"', 406),
            ('multipart/related; type="image/jpeg"', 406),
        ],
        ids=["own-type", "octet-as-stored", "octet-uncompressed", "other-codec"],
    )
    def test_accept_is_honoured_without_transcoding(
        self, bulk: Bulk, accept: str, status: int
    ) -> None:
        response = bulk.get(f"{bulk.jpeg_ls.path}/frames/1", Accept=accept)
        assert response.status_code == status
        if status == 406:
            assert response.json()["error"] == "not-acceptable"

    def test_native_frames_are_octet_stream_in_explicit_little_endian(self, bulk: Bulk) -> None:
        response = bulk.get(f"{bulk.native.path}/frames/1")
        content_type = response.headers["content-type"]
        assert content_type.startswith('multipart/related; type="application/octet-stream"')
        assert b"transfer-syntax=1.2.840.10008.1.2.1\r\n" in response.content

    @pytest.mark.parametrize(
        ("frames", "reason"),
        [
            ("0", "frame numbers start at 1"),
            ("1,x", "the frame list must be comma-separated positive integers"),
            ("1,,2", "the frame list must be comma-separated positive integers"),
            ("-1", "the frame list must be comma-separated positive integers"),
            (f"{FRAMES + 1}", f"the instance has {FRAMES} frame(s)"),
            (",".join(["1"] * (MAX_FRAMES + 1)), f"at most {MAX_FRAMES} frames"),
            (",".join(["2", "1"] * (MAX_STEPS_BACK + 1)), "the frame list steps back more than"),
        ],
        ids=["zero", "not-integer", "empty-item", "negative", "beyond", "too-many", "rewinds"],
    )
    def test_a_bad_frame_list_is_a_bad_request_with_its_reason(
        self, bulk: Bulk, frames: str, reason: str
    ) -> None:
        response = bulk.get(f"{bulk.native.path}/frames/{frames}")
        assert response.status_code == 400
        assert response.json()["detail"].startswith(reason)


class TestDicomwebClient:
    def test_retrieve_instance_frames(self, bulk: Bulk) -> None:
        copy = bulk.native.copy
        frames = bulk.client().retrieve_instance_frames(
            str(copy.StudyInstanceUID),
            str(copy.SeriesInstanceUID),
            str(copy.SOPInstanceUID),
            [4, 5],
        )
        assert frames == bulk.native.frames()[3:5]

    def test_retrieve_bulkdata(self, bulk: Bulk) -> None:
        assert bulk.client().retrieve_bulkdata(_uri(bulk, bulk.native)) == [
            bulk.native.copy.PixelData
        ]


class TestRefusals:
    def test_an_unassigned_engineer_gets_the_unknown_instance_answer(self, bulk: Bulk) -> None:
        other = bulk.world.auth.token(bulk.world.other_engineer)
        unknown = "/dicomweb/studies/2.25.999/series/2.25.998/instances/2.25.997"
        for tail in ("/frames/1", "/frames/0", "/bulkdata/7FE00010", "/bulkdata/00280010"):
            refused = bulk.get(f"{bulk.native.path}{tail}", token=other)
            for token in (other, None):
                missing = bulk.get(f"{unknown}{tail}", token=token)
                assert (refused.status_code, refused.json()) == (404, missing.json()), tail
            assert set(refused.headers) == set(missing.headers), tail

    def test_a_search_with_no_match_is_204_with_no_body(self, bulk: Bulk) -> None:
        response = bulk.get("/dicomweb/studies?PatientID=PSN-NOBODY")
        assert (response.status_code, response.content) == (204, b"")
        assert bulk.client().search_for_studies(search_filters={"PatientID": "PSN-NOBODY"}) == []


class TestAccessLog:
    def test_frames_and_bulkdata_reads_are_recorded(self, bulk: Bulk) -> None:
        world = bulk.world
        body = bulk.get(f"{bulk.native.path}/frames/2").content
        bulk.get(f"{bulk.jpeg_ls.path}/bulkdata/7FE00010")
        bulk.get(f"{bulk.native.path}/frames/99")
        actor = f"token:{world.token_id}"
        served, refused = events(world.vault, "dicomweb.frames")[-2:]
        assert (served.actor, served.outcome, served.object_type) == (
            actor,
            "success",
            "pseudonymised-instance",
        )
        assert f'"bytes":{len(body)}' in served.detail and '"frames":1' in served.detail
        assert refused.outcome == "bad-request"
        data = events(world.vault, "dicomweb.bulkdata")[-1]
        assert (data.outcome, data.object_type) == ("success", "pseudonymised-instance")
        assert '"attribute":"7FE00010"' in data.detail
        assert world.vault.audit.verify() == []
