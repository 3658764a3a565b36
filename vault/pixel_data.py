"""Pixel data read straight from a decrypting stream: its element, its frames, its value.

:func:`open_pixels` reads an object's header (:func:`vault.dicom_headers.read_header_and_rest`)
and the header of the element that follows it (Pixel Data, Float or Double
Float Pixel Data), leaving a forward-only :class:`Forward` reader at the
start of the value. Nothing past the header is held: frames and the value
are produced in pieces of at most :data:`vault.objects.CHUNK` bytes.

:class:`FrameReader` yields the bytes of frames in the order asked. The
stream cannot seek back, so a frame before the reader's position (a list
out of order, or a frame asked twice) reopens the object and reads forward
from its start again. Native frames lie at fixed offsets; encapsulated
frames are found from the Extended Offset Table, else the Basic Offset
Table, else (one frame: every fragment is it) one fragment per frame unless
fragments start with a codestream's start marker (JPEG, JPEG-LS, JPEG 2000),
in which case a marker starts a frame. Only little-endian, non-deflated
syntaxes are read here; the others answer :class:`~vault.errors.NotAcceptable`
(serving their pixels would need transcoding).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import UID, ImplicitVRLittleEndian

from vault.dicom_headers import read_header_and_rest
from vault.downloads import MemberOpener
from vault.errors import InvalidInput, NotAcceptable
from vault.objects import CHUNK, StoredObject

PIXEL_DATA = 0x7FE00010
PIXEL_TAGS = {PIXEL_DATA: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class PixelElement:
    """The pixel data element of an object: its tag, VR and value length (None: encapsulated)."""

    tag: int
    vr: str
    length: int | None


class Forward:
    """A forward-only reader of ``prefix`` then ``source``, counting its position."""

    def __init__(self, prefix: bytes, source: BinaryIO) -> None:
        self._prefix, self._source = prefix, source
        self.position = 0

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end)."""
        data = self._prefix[:size]
        self._prefix = self._prefix[len(data) :]
        while len(data) < size:
            more = self._source.read(size - len(data))
            if not more:
                break
            data += more
        self.position += len(data)
        return data

    def exactly(self, size: int) -> bytes:
        data = self.read(size)
        if len(data) != size:
            raise InvalidInput("the stored object's pixel data are truncated")
        return data

    def pieces(self, size: int) -> Iterator[bytes]:
        """The next ``size`` bytes, at most :data:`CHUNK` at a time."""
        while size > 0:
            data = self.exactly(min(size, CHUNK))
            size -= len(data)
            yield data

    def skip(self, size: int) -> None:
        for _ in self.pieces(size):
            pass


def _element(forward: Forward, implicit: bool) -> PixelElement | None:
    head = forward.read(8)
    if len(head) < 8:
        return None
    group, number = struct.unpack("<HH", head[:4])
    tag = group << 16 | number
    if tag not in PIXEL_TAGS:
        return None
    if implicit:
        (length,) = struct.unpack("<I", head[4:])
        vr = PIXEL_TAGS[tag] if length != _UNDEFINED else "OB"
    else:
        vr = head[4:6].decode("ascii", "replace")
        (length,) = struct.unpack("<I", forward.exactly(4))
    return PixelElement(tag, vr, None if length == _UNDEFINED else length)


@dataclass
class Opened:
    """An object opened at its pixel data: header, element (if any), reader at the value."""

    dataset: Dataset
    element: PixelElement | None
    forward: Forward
    source: BinaryIO

    @property
    def syntax(self) -> UID:
        return UID(str(self.dataset.file_meta.TransferSyntaxUID))

    def close(self) -> None:
        self.source.close()


def readable(syntax: UID) -> bool:
    """Whether pixel data in ``syntax`` are read here (little-endian, not deflated)."""
    return syntax.is_little_endian and not syntax.is_deflated


def open_pixels(open_member: MemberOpener, stored: StoredObject) -> Opened:
    """``stored`` opened with ``open_member``, read up to its pixel data value.

    The element is None when there is none, or when the syntax is not
    :func:`readable` here (big-endian, deflated).

    Raises:
        InvalidInput: the header is unreadable.
        IntegrityError: the segments read are tampered with.
    """
    source = open_member(stored)
    try:
        dataset, rest = read_header_and_rest(source)
        syntax = UID(str(dataset.file_meta.TransferSyntaxUID))
        forward = Forward(rest, source)
        element = _element(forward, syntax == ImplicitVRLittleEndian) if readable(syntax) else None
    except BaseException:
        source.close()
        raise
    return Opened(dataset, element, forward, source)


def pixel_element(
    open_member: MemberOpener, stored: StoredObject
) -> tuple[Dataset, PixelElement | None]:
    """The header of ``stored`` and its pixel data element, if any (metadata needs both)."""
    opened = open_pixels(open_member, stored)
    opened.close()
    return opened.dataset, opened.element


def frame_count(dataset: Dataset) -> int:
    """The number of frames the header states (1 when Number of Frames is absent)."""
    value = dataset.get("NumberOfFrames")
    try:
        return max(int(value), 1) if value not in (None, "") else 1
    except (TypeError, ValueError) as exc:
        raise InvalidInput("the stored object's Number of Frames is malformed") from exc


def native_frame_size(dataset: Dataset) -> int:
    """The byte length of one native frame.

    Raises:
        NotAcceptable: frames that do not start on a byte (1-bit images of odd size).
    """
    bits = int(dataset.get("BitsAllocated", 0) or 0)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    total = rows * columns * samples * bits
    if total == 0:
        raise InvalidInput("the stored object's image attributes are missing")
    if total % 8:
        raise NotAcceptable("frames of this bit depth do not start on a byte boundary")
    return total // 8
