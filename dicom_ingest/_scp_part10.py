"""A received C-STORE data set framed as a DICOM Part 10 file (private).

The pipeline takes Part 10 streams. A C-STORE carries only the data set, so
the receiver puts the preamble, ``DICM`` and the File Meta Information in
front of it: exactly the elements (and bytes) pynetdicom's
``Event.file_meta`` written by pydicom's ``write_file_meta_info`` would
give, encoded here directly because building and encoding a pydicom
dataset per instance costs more than the rest of the framing together.
The data set itself is not copied: :class:`Part10Stream` reads it through
a memoryview.
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length field."""
    return struct.pack("<HH", 0x0002, group_element) + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


_VERSION = struct.pack("<HH", 0x0002, 0x0001) + b"OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01"
_IMPLEMENTATION = _element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)) + _element(
    0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)
)


@lru_cache(maxsize=256)
def _class_element(sop_class: str) -> bytes:
    return _element(0x0002, b"UI", _uid(sop_class))


@lru_cache(maxsize=64)
def _syntax_element(transfer_syntax: str) -> bytes:
    return _element(0x0010, b"UI", _uid(transfer_syntax))


def part10_prefix(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and File Meta Information of a received data set.

    Raises:
        UnicodeEncodeError: a UID that is not ASCII (the caller refuses it).
    """
    body = b"".join(
        (
            _VERSION,
            _class_element(sop_class),
            _element(0x0003, b"UI", _uid(sop_instance)),
            _syntax_element(transfer_syntax),
            _IMPLEMENTATION,
        )
    )
    length = _element(0x0000, b"UL", struct.pack("<I", len(body)))
    return PREAMBLE + length + body


class Part10Stream(io.RawIOBase):
    """Preamble, ``DICM``, file meta, then the received data set, read in order.

    The data set's buffer is read through a memoryview: its bytes are not
    copied into a second Part 10 buffer; ``read`` returns each part's bytes
    with one copy.
    """

    def __init__(self, prefix: bytes, dataset: memoryview) -> None:
        super().__init__()
        self._parts = [memoryview(prefix), dataset]
        self._offset = 0

    def readable(self) -> bool:
        return True

    def _current(self) -> memoryview | None:
        while self._parts and self._offset >= len(self._parts[0]):
            self._parts.pop(0)
            self._offset = 0
        return self._parts[0] if self._parts else None

    def readinto(self, buffer: Any) -> int:
        part = self._current()
        if part is None:
            return 0
        count = min(len(buffer), len(part) - self._offset)
        buffer[:count] = part[self._offset : self._offset + count]
        self._offset += count
        return count

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the current part (never across two parts)."""
        part = self._current()
        if part is None:
            return b""
        end = len(part) if size is None or size < 0 else min(len(part), self._offset + size)
        data = bytes(part[self._offset : end])
        self._offset = end
        return data


def part10_stream(event: Any) -> tuple[Part10Stream, memoryview]:
    """The Part 10 stream of a C-STORE event, and the raw data set it ends with."""
    request = event.request
    prefix = part10_prefix(
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
        str(event.context.transfer_syntax),
    )
    dataset = request.DataSet.getbuffer()
    return Part10Stream(prefix, dataset), dataset
