"""WADO-RS frames of encapsulated, big-endian, deflated and 1-bit objects, against a real server.

Real codec output (pydicom's JPEG-LS, JPEG 2000 and RLE encodings of the
10-frame ``emri_small`` Enhanced MR) is encapsulated anew with pydicom's
own encoders: several fragments per frame with a Basic Offset Table, or
without one (start markers then tell frames apart), and one fragment per
frame listed by an Extended Offset Table (7FE0,0001/0002). Big-endian and
deflated copies of the native file and 1-bit multi-frame images complete
the set. Every instance is ingested through the one pipeline and
pseudonymised by the real de-identification pipeline; every expected frame
is read by pydicom (``generate_frames``, ``get_frame``) from the
pseudonymised copy as WADO-RS serves it whole.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames, get_frame
from pydicom.uid import generate_uid

from tests.engineer_support import (
    World,
    assign,
    engineer_world,
    ingest,
    pseudonymise,
    served_copies,
    serving,
    wado_parts,
)
from tests.services.vault_env import make_case

FRAMES = 10
JPEG_LS, JPEG_2K, RLE = (
    "emri_small_jpeg_ls_lossless.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_RLE.dcm",
)
ONE_BIT_FRAMES = 3


def _codestreams(name: str) -> list[bytes]:
    """The frames of a pydicom test file, as its codec wrote them."""
    dataset = dcmread(get_testdata_file(name))
    return list(generate_frames(dataset.PixelData, number_of_frames=FRAMES))


def _from(name: str) -> Dataset:
    dataset = dcmread(get_testdata_file(name))
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


def _encapsulated(name: str, fragments: int, *, bot: bool, frames: int = FRAMES) -> Dataset:
    dataset = _from(name)
    codestreams = _codestreams(name)[:frames]
    dataset.PixelData = encapsulate(codestreams, fragments_per_frame=fragments, has_bot=bot)
    dataset.NumberOfFrames = frames
    return dataset


def _extended(name: str) -> Dataset:
    dataset = _from(name)
    data, offsets, lengths = encapsulate_extended(_codestreams(name))
    dataset.PixelData = data
    dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths = offsets, lengths
    return dataset


def _one_bit(side: int) -> Dataset:
    """``ONE_BIT_FRAMES`` frames of ``side`` x ``side`` 1-bit pixels, packed as PS3.5 8.1.1."""
    dataset = _from("emri_small.dcm")
    bits = np.random.default_rng(side).integers(0, 2, ONE_BIT_FRAMES * side * side, np.uint8)
    packed = np.packbits(bits, bitorder="little").tobytes()
    dataset.Rows = dataset.Columns = side
    dataset.NumberOfFrames = ONE_BIT_FRAMES
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 1, 0
    dataset.PixelRepresentation = 0
    dataset.PixelData = packed + b"\x00" * (len(packed) % 2)
    dataset["PixelData"].VR = "OB"
    return dataset


# Each instance of the study, by the Series Number that finds it in the copy.
MADE: dict[str, Callable[[], Dataset]] = {
    "ls-bot": lambda: _encapsulated(JPEG_LS, 3, bot=True),
    "ls-markers": lambda: _encapsulated(JPEG_LS, 3, bot=False),
    "j2k-bot": lambda: _encapsulated(JPEG_2K, 2, bot=True),
    "rle-bot": lambda: _encapsulated(RLE, 2, bot=True),  # no start marker: the table alone
    "j2k-eot": lambda: _extended(JPEG_2K),
    "rle-eot": lambda: _extended(RLE),
    "ls-single-bot": lambda: _encapsulated(JPEG_LS, 2, bot=True, frames=1),
    "big-endian": lambda: _from("emri_small_big_endian.dcm"),
    "one-bit-aligned": lambda: _one_bit(8),
    "one-bit-unaligned": lambda: _one_bit(5),
}
NAMES = list(MADE)


def _study() -> list[Dataset]:
    study_uid, datasets = generate_uid(), []
    for number, name in enumerate(NAMES, start=1):
        dataset = MADE[name]()
        dataset.StudyInstanceUID = study_uid
        dataset.PatientName, dataset.PatientID = "Frame^Mapping", "FRAMES-0001"
        dataset.PatientBirthDate, dataset.StudyDate = "19700101", "20240102"
        dataset.SeriesNumber = number
        datasets.append(dataset)
    return datasets


@dataclass
class Instance:
    """One served instance: its WADO-RS path and the pseudonymised copy as served."""

    path: str
    copy: Dataset

    @property
    def count(self) -> int:
        return int(self.copy.get("NumberOfFrames", 1))

    def frames(self) -> list[bytes]:
        """The copy's frames as pydicom reads them (Extended Offset Table first)."""
        data = self.copy.PixelData
        if "ExtendedOffsetTable" in self.copy:
            table = (self.copy.ExtendedOffsetTable, self.copy.ExtendedOffsetTableLengths)
            return [get_frame(data, i, extended_offsets=table) for i in range(self.count)]
        return list(generate_frames(data, number_of_frames=self.count))


@dataclass
class Mapping:
    world: World
    url: str
    instances: dict[str, Instance]

    def get(self, path: str) -> httpx.Response:
        with httpx.Client(base_url=self.url, headers=self.world.bearer(), timeout=60) as http:
            return http.get(path)

    def parts(self, path: str) -> list[bytes]:
        """The parts of a multipart answer, split by dicomweb-client's own decoder."""
        return wado_parts(self.url, path, self.world.bearer())


def _served(world: World, study: str, url: str) -> dict[str, Instance]:
    return {
        NAMES[int(copy.SeriesNumber) - 1]: Instance(path, copy)
        for path, copy in served_copies(world, study, url)
    }


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mapping]:
    with engineer_world(tmp_path_factory.mktemp("frame-mapping") / "data", "FM-CASE") as world:
        case = make_case(world.vault, "FM-CASE-3")
        assign(world.vault, case.case_id, world.engineer)
        study = pseudonymise(world.vault, ingest(case, _study()))
        with serving(world.vault) as url:
            found = _served(world, study, url)
            assert set(found) == set(NAMES)
            yield Mapping(world, url, found)


ENCAPSULATED = ["ls-bot", "ls-markers", "j2k-bot", "rle-bot", "j2k-eot", "rle-eot"]
ORDERS = {"ascending": list(range(1, FRAMES + 1)), "shuffled": [7, 2, 10, 2, 1, 9, 3, 3]}


class TestEncapsulatedFrames:
    def test_the_copies_keep_the_encapsulation_made(self, mapping: Mapping) -> None:
        """The premise: de-identification kept each layout, so each path below is exercised."""
        copies = {name: mapping.instances[name].copy for name in ENCAPSULATED}
        assert all(len(copy.PixelData) > 0 for copy in copies.values())
        for name in ("ls-bot", "j2k-bot", "rle-bot"):
            assert copies[name].PixelData[4:8] == (FRAMES * 4).to_bytes(4, "little")
        assert copies["ls-markers"].PixelData[4:8] == b"\x00\x00\x00\x00"
        for name in ("j2k-eot", "rle-eot"):
            assert len(copies[name].ExtendedOffsetTable) == FRAMES * 8
            assert copies[name].PixelData[4:8] == b"\x00\x00\x00\x00"

    @pytest.mark.parametrize("order", list(ORDERS))
    @pytest.mark.parametrize("name", ENCAPSULATED)
    def test_frames_are_the_copys_frames_in_list_order(
        self, mapping: Mapping, name: str, order: str
    ) -> None:
        instance, numbers = mapping.instances[name], ORDERS[order]
        parts = mapping.parts(f"{instance.path}/frames/{','.join(map(str, numbers))}")
        frames = instance.frames()
        assert parts == [frames[number - 1] for number in numbers]

    @pytest.mark.parametrize("name", ["ls-bot", "ls-markers", "rle-bot", "rle-eot"])
    def test_pixel_bulkdata_is_every_frame_in_order(self, mapping: Mapping, name: str) -> None:
        instance = mapping.instances[name]
        assert mapping.parts(f"{instance.path}/bulkdata/7FE00010") == instance.frames()

    def test_a_single_frame_with_a_basic_offset_table_is_its_codestream_alone(
        self, mapping: Mapping
    ) -> None:
        instance = mapping.instances["ls-single-bot"]
        assert instance.copy.PixelData[4:8] == b"\x04\x00\x00\x00"  # one offset in the table
        (frame,) = instance.frames()
        assert mapping.parts(f"{instance.path}/frames/1") == [frame]
        assert mapping.parts(f"{instance.path}/bulkdata/7FE00010") == [frame]


class TestBigEndian:
    """Big-endian pixels would need byte swapping (transcoding): refused, never sent swapped."""

    @pytest.mark.parametrize("tail", ["/frames/1", "/frames/2,1", "/bulkdata/7FE00010"])
    def test_frames_and_pixel_bulkdata_are_not_acceptable(
        self, mapping: Mapping, tail: str
    ) -> None:
        instance = mapping.instances["big-endian"]
        assert instance.copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
        response = mapping.get(f"{instance.path}{tail}")
        assert response.status_code == 406
        assert response.json()["error"] == "not-acceptable"
        assert "FRAMES-0001" not in response.text

    def test_metadata_has_no_pixel_data_bulkdata_uri(self, mapping: Mapping) -> None:
        instance = mapping.instances["big-endian"]
        (metadata,) = mapping.get(f"{instance.path}/metadata").json()
        assert metadata["00080018"]["Value"] == [str(instance.copy.SOPInstanceUID)]
        assert "7FE00010" not in metadata

    def test_the_instance_itself_is_still_served_as_stored(self, mapping: Mapping) -> None:
        instance = mapping.instances["big-endian"]
        (part,) = mapping.parts(instance.path)
        assert dcmread(io.BytesIO(part)).PixelData == instance.copy.PixelData


class TestOneBit:
    def test_frames_on_byte_boundaries_are_their_packed_bytes(self, mapping: Mapping) -> None:
        instance = mapping.instances["one-bit-aligned"]  # 8 x 8: 8 bytes a frame
        data = instance.copy.PixelData
        assert mapping.parts(f"{instance.path}/frames/3,1") == [data[16:24], data[0:8]]

    @pytest.mark.parametrize("frames", ["1", "2", "3,1"])
    def test_frames_not_each_whole_bytes_are_not_acceptable(
        self, mapping: Mapping, frames: str
    ) -> None:
        instance = mapping.instances["one-bit-unaligned"]  # 5 x 5: frame 2 starts at bit 25
        response = mapping.get(f"{instance.path}/frames/{frames}")
        assert response.status_code == 406
        assert response.json()["detail"] == (
            "frames of this bit depth do not start on a byte boundary"
        )

    def test_their_pixel_bulkdata_is_the_whole_packed_value(self, mapping: Mapping) -> None:
        instance = mapping.instances["one-bit-unaligned"]
        parts = mapping.parts(f"{instance.path}/bulkdata/7FE00010")
        assert parts == [instance.copy.PixelData]
