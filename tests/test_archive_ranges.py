"""The archive writer and HTTP ranges, without the app: layout, slices, what gets opened.

The writer's bytes are compared with what Python's :mod:`zipfile` writes for
the same members (stored, to a non-seekable sink, fixed date and mode),
including the ZIP64 records (by member count, and by size and offset with
zipfile's threshold lowered for the test). Any range of an archive must equal
that slice of the whole; a range must open only the members it touches.
Members are plain in-memory payloads here; the routes' tests use real
encrypted objects.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from typing import BinaryIO

import pytest

from crypto.errors import IntegrityError
from vault.downloads import (
    ArchiveMember,
    CrcCache,
    archive_size,
    stream_archive,
    stream_object,
)
from vault.errors import RangeNotSatisfiable
from vault.http_ranges import ByteRange, not_modified, requested_range
from vault.objects import StoredObject
from vault.zip_layout import plan_archive

Payloads = dict[str, bytes]


def members_of(payloads: Payloads) -> list[ArchiveMember]:
    return [
        ArchiveMember(name, StoredObject(name, "k", hashlib.sha256(data).hexdigest(), len(data)))
        for name, data in payloads.items()
    ]


def opener_of(payloads: Payloads, opened: list[str] | None = None) -> Callable[..., BinaryIO]:
    def open_member(stored: StoredObject) -> BinaryIO:
        if opened is not None:
            opened.append(stored.object_key)
        return io.BytesIO(payloads[stored.object_key])

    return open_member


class _Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing buffered."""


def zipfile_bytes(payloads: Payloads) -> bytes:
    """What zipfile writes for ``payloads`` to a non-seekable sink, stored, fixed metadata."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:  # type: ignore[arg-type]
        for name, data in payloads.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            info.file_size = len(data)
            with archive.open(info, "w") as out:
                out.write(data)
    return b"".join(sink.parts)


def written(payloads: Payloads, **options: object) -> bytes:
    return b"".join(stream_archive(members_of(payloads), opener_of(payloads), **options))  # type: ignore[arg-type]


SAMPLES = {
    "empty": {},
    "one-empty-member": {"2.25.1/1.dcm": b""},
    "one-byte": {"2.25.1/1.dcm": b"x"},
    "mixed": {"2.25.1/1.dcm": b"a" * 5000, "2.25.1/2.dcm": b"", "2.25.2/é.dcm": b"b" * 70_000},
    "spans-chunks": {f"2.25.9/{i}.dcm": bytes([i]) * 300_000 for i in range(3)},
}


class TestLayout:
    @pytest.mark.parametrize("payloads", SAMPLES.values(), ids=SAMPLES.keys())
    def test_bytes_equal_what_zipfile_writes(self, payloads: Payloads) -> None:
        assert written(payloads, chunk=65_536) == zipfile_bytes(payloads)

    @pytest.mark.parametrize("payloads", SAMPLES.values(), ids=SAMPLES.keys())
    def test_predicted_size_equals_the_written_archive(self, payloads: Payloads) -> None:
        archive = written(payloads)
        assert archive_size(members_of(payloads)) == len(archive)
        with zipfile.ZipFile(io.BytesIO(archive)) as opened:
            assert {name: opened.read(name) for name in opened.namelist()} == payloads

    def test_zip64_sizes_and_offsets_are_written_as_zipfile_writes_them(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 3000)
        payloads = {f"2.25.3/{i}.dcm": bytes([i]) * (i * 700) for i in range(8)}
        plan = plan_archive([(name, len(data)) for name, data in payloads.items()])
        assert any(entry.zip64 for entry in plan.entries) and plan.needs_zip64_end
        archive = written(payloads, chunk=1000)
        assert archive == zipfile_bytes(payloads)
        with zipfile.ZipFile(io.BytesIO(archive)) as opened:
            assert [opened.read(name) for name in payloads] == list(payloads.values())

    def test_more_than_65535_members_get_the_zip64_end_records(self) -> None:
        payloads = {f"s/{i}": b"" for i in range(65_536)}
        assert plan_archive([(name, 0) for name in payloads]).needs_zip64_end
        assert written(payloads) == zipfile_bytes(payloads)


class TestRanges:
    PAYLOADS = SAMPLES["mixed"] | {"2.25.3/3.dcm": bytes(range(256)) * 2000}

    def test_every_range_around_every_record_boundary_is_that_slice(self) -> None:
        whole = written(self.PAYLOADS)
        plan = plan_archive([(name, len(data)) for name, data in self.PAYLOADS.items()])
        edges = sorted({p.start for p in plan.pieces()} | {len(whole)})
        points = sorted({max(0, min(len(whole), e + d)) for e in edges for d in (-1, 0, 1)})
        for start in points[:-1]:
            for stop in (start + 1, *[p for p in points if p > start][:3], len(whole)):
                part = written(self.PAYLOADS, byte_range=ByteRange(start, stop), chunk=777)
                assert part == whole[start:stop], (start, stop)

    def test_a_range_inside_one_member_opens_only_that_member(self) -> None:
        whole = written(self.PAYLOADS)
        offset = whole.index(bytes(range(256)) * 4)  # inside the last member's data
        opened: list[str] = []
        members, open_member = members_of(self.PAYLOADS), opener_of(self.PAYLOADS, opened)
        piece = stream_archive(members, open_member, byte_range=ByteRange(offset, offset + 10))
        assert b"".join(piece) == whole[offset : offset + 10]
        assert opened == ["2.25.3/3.dcm"]

    def test_the_central_directory_needs_no_member_once_their_crcs_are_known(self) -> None:
        whole = written(self.PAYLOADS)
        directory = whole.index(b"PK\x01\x02")
        members, crcs = members_of(self.PAYLOADS), CrcCache()
        b"".join(stream_archive(members, opener_of(self.PAYLOADS), crcs=crcs))
        opened: list[str] = []
        tail = stream_archive(
            members,
            opener_of(self.PAYLOADS, opened),
            byte_range=ByteRange(directory, len(whole)),
            crcs=crcs,
        )
        assert b"".join(tail) == whole[directory:]
        assert opened == []

    def test_a_cold_range_into_the_directory_reads_each_member_once_for_its_crc(self) -> None:
        whole = written(self.PAYLOADS)
        directory = whole.index(b"PK\x01\x02")
        opened: list[str] = []
        members = members_of(self.PAYLOADS)
        tail = stream_archive(
            members, opener_of(self.PAYLOADS, opened), byte_range=ByteRange(directory, len(whole))
        )
        assert b"".join(tail) == whole[directory:]
        assert sorted(opened) == sorted(self.PAYLOADS)


class _FailsAtEnd(io.BytesIO):
    """A member whose verification fails when its end is reached."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data:
            raise IntegrityError("the stored object does not match its catalogued checksum")
        return data


class TestVerification:
    def test_a_member_failing_at_its_end_never_has_its_last_piece_sent(self) -> None:
        data = bytes(range(256)) * 100
        stored = StoredObject("x", "k", hashlib.sha256(data).hexdigest(), len(data))
        received = bytearray()
        with pytest.raises(IntegrityError):
            for piece in stream_object(stored, lambda _: _FailsAtEnd(data), chunk=1000):
                received += piece
        assert len(received) < len(data)
        assert data.startswith(bytes(received))


class TestHttpRanges:
    ETAG = '"abc"'

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({}, None),
            ({"range": "bytes=0-9"}, ByteRange(0, 10)),
            ({"range": "bytes=10-"}, ByteRange(10, 100)),
            ({"range": "bytes=-5"}, ByteRange(95, 100)),
            ({"range": "bytes=-500"}, ByteRange(0, 100)),
            ({"range": "bytes=90-500"}, ByteRange(90, 100)),
            ({"range": "bytes=0-1,5-6"}, None),
            ({"range": "items=0-1"}, None),
            ({"range": "bytes=9-3"}, None),
            ({"range": "bytes=5-", "if-range": ETAG}, ByteRange(5, 100)),
            ({"range": "bytes=5-", "if-range": '"other"'}, None),
            ({"range": "bytes=5-", "if-range": "W/" + ETAG}, None),
            ({"range": "bytes=5-", "if-range": "Tue, 15 Nov 1994 08:12:31 GMT"}, None),
        ],
    )
    def test_requested_range(self, headers: dict[str, str], expected: ByteRange | None) -> None:
        assert requested_range(headers, 100, self.ETAG) == expected

    @pytest.mark.parametrize("value", ["bytes=100-", "bytes=500-600", "bytes=-0"])
    def test_unsatisfiable_ranges_raise_with_the_length(self, value: str) -> None:
        with pytest.raises(RangeNotSatisfiable) as raised:
            requested_range({"range": value}, 100, self.ETAG)
        assert raised.value.size == 100

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(ETAG, True), (f'"x", {ETAG}', True), ("W/" + ETAG, True), ("*", True), ('"x"', False)],
    )
    def test_if_none_match(self, value: str, expected: bool) -> None:
        assert not_modified({"if-none-match": value}, self.ETAG) is expected
