"""The byte layout of the engineers' archives: a ZIP of stored members, record by record.

Owns every record of the archive (PKWARE APPNOTE 6.3.x): local file header,
data descriptor, central directory entry, and the ZIP64 end records when
they are needed. Records are the bytes Python's :mod:`zipfile` writes for
stored members sent to a non-seekable sink (a data descriptor after each
member, CRC and sizes left out of the local header) with a fixed timestamp
and mode, so any ZIP reader opens them, and so that the offset and length of
every record follow from the member names and sizes alone. Only the data
descriptor and the central directory entry carry a member's CRC-32; the
caller supplies it when those bytes are produced.

``limit`` is the ZIP64 threshold (:data:`zipfile.ZIP64_LIMIT`, 2 GiB - 1):
past it, a member's sizes or offset move into a ZIP64 extra field, exactly
where zipfile puts them.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

_DOS_DATE = (1 << 5) | 1  # 1980-01-01, the earliest ZIP date: the same bytes on every run
_DOS_TIME = 0
_MODE = 0o100644 << 16
_UNIX = 3
_VERSION, _ZIP64_VERSION = 20, 45
_DESCRIPTOR_FLAG, _UTF8_FLAG = 0x08, 0x800
_FILECOUNT_LIMIT = (1 << 16) - 1
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")


class Part(Enum):
    HEADER = "header"
    DATA = "data"
    DESCRIPTOR = "descriptor"
    CENTRAL = "central"
    END = "end"


@dataclass(frozen=True)
class Entry:
    """Where one member's records sit in the archive."""

    name: bytes
    flags: int
    size: int
    offset: int  # of its local header
    zip64: bool  # a ZIP64 local header and a 24-byte data descriptor
    limit: int

    @property
    def header_size(self) -> int:
        return _LOCAL.size + len(self.name) + (20 if self.zip64 else 0)

    @property
    def descriptor_size(self) -> int:
        return 24 if self.zip64 else 16

    @property
    def span(self) -> int:
        """Local header, data and descriptor together."""
        return self.header_size + self.size + self.descriptor_size

    def central_extra(self) -> list[int]:
        extra = [self.size, self.size] if self.size > self.limit else []
        return [*extra, self.offset] if self.offset > self.limit else extra

    @property
    def central_size(self) -> int:
        extra = self.central_extra()
        return _CENTRAL.size + len(self.name) + (4 + 8 * len(extra) if extra else 0)


@dataclass(frozen=True)
class Piece:
    """One contiguous run of archive bytes: a record, or a member's data."""

    start: int
    length: int
    part: Part
    index: int  # the member's position (-1 for the end records)


@dataclass(frozen=True)
class Plan:
    """The layout of a whole archive."""

    entries: tuple[Entry, ...]
    directory_offset: int
    directory_size: int
    limit: int

    @property
    def needs_zip64_end(self) -> bool:
        return (
            len(self.entries) > _FILECOUNT_LIMIT
            or self.directory_offset > self.limit
            or self.directory_size > self.limit
        )

    @property
    def end_size(self) -> int:
        return _END.size + (_END64.size + _LOCATOR64.size if self.needs_zip64_end else 0)

    @property
    def total(self) -> int:
        return self.directory_offset + self.directory_size + self.end_size

    def pieces(self) -> Iterator[Piece]:
        """Every run of bytes in archive order."""
        for index, entry in enumerate(self.entries):
            data = entry.offset + entry.header_size
            yield Piece(entry.offset, entry.header_size, Part.HEADER, index)
            yield Piece(data, entry.size, Part.DATA, index)
            yield Piece(data + entry.size, entry.descriptor_size, Part.DESCRIPTOR, index)
        offset = self.directory_offset
        for index, entry in enumerate(self.entries):
            yield Piece(offset, entry.central_size, Part.CENTRAL, index)
            offset += entry.central_size
        yield Piece(offset, self.end_size, Part.END, -1)


def _encoded(name: str) -> tuple[bytes, int]:
    try:
        return name.encode("ascii"), _DESCRIPTOR_FLAG
    except UnicodeEncodeError:
        return name.encode("utf-8"), _DESCRIPTOR_FLAG | _UTF8_FLAG


def plan_archive(members: Sequence[tuple[str, int]], *, limit: int | None = None) -> Plan:
    """The layout of the archive of ``members`` (name, size), in that order."""
    limit = zipfile.ZIP64_LIMIT if limit is None else limit
    entries: list[Entry] = []
    offset = 0
    for name, size in members:
        encoded, flags = _encoded(name)
        entry = Entry(encoded, flags, size, offset, size * 1.05 > limit, limit)
        entries.append(entry)
        offset += entry.span
    directory = sum(entry.central_size for entry in entries)
    return Plan(tuple(entries), offset, directory, limit)


def local_header(entry: Entry) -> bytes:
    """The member's local file header (no CRC or sizes: they follow the data)."""
    version = _ZIP64_VERSION if entry.zip64 else _VERSION
    extra = struct.pack("<HHQQ", 1, 16, 0, 0) if entry.zip64 else b""
    size = 0xFFFFFFFF if entry.zip64 else 0
    fixed = _LOCAL.pack(
        b"PK\x03\x04", version, 0, entry.flags, zipfile.ZIP_STORED, _DOS_TIME, _DOS_DATE,
        0, size, size, len(entry.name), len(extra),
    )  # fmt: skip
    return fixed + entry.name + extra


def descriptor(entry: Entry, crc: int) -> bytes:
    """The data descriptor following the member's data."""
    layout = "<LLQQ" if entry.zip64 else "<LLLL"
    return struct.pack(layout, 0x08074B50, crc, entry.size, entry.size)


def central_entry(entry: Entry, crc: int) -> bytes:
    """The member's central directory entry."""
    extra_values = entry.central_extra()
    extra = b""
    if extra_values:
        extra = struct.pack(f"<HH{len(extra_values)}Q", 1, 8 * len(extra_values), *extra_values)
    version = _ZIP64_VERSION if entry.zip64 or extra_values else _VERSION
    size = 0xFFFFFFFF if entry.size > entry.limit else entry.size
    offset = 0xFFFFFFFF if entry.offset > entry.limit else entry.offset
    fixed = _CENTRAL.pack(
        b"PK\x01\x02", version, _UNIX, version, 0, entry.flags, zipfile.ZIP_STORED,
        _DOS_TIME, _DOS_DATE, crc, size, size, len(entry.name), len(extra), 0, 0, 0,
        _MODE, offset,
    )  # fmt: skip
    return fixed + entry.name + extra


def end_records(plan: Plan) -> bytes:
    """The end of central directory record, preceded by the ZIP64 ones when needed."""
    count, size, offset = len(plan.entries), plan.directory_size, plan.directory_offset
    records = b""
    if plan.needs_zip64_end:
        records = _END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
        records += _LOCATOR64.pack(b"PK\x06\x07", 0, offset + size, 1)
        count, size, offset = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(offset, 0xFFFFFFFF)
    return records + _END.pack(b"PK\x05\x06", 0, 0, count, count, size, offset, 0)
