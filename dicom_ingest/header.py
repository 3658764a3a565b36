"""Reading a DICOM header from the front of a stream, without pixel data.

:func:`read_header` pulls bytes from a stream only until pydicom can parse the
whole header (everything before the top-level Pixel Data element), never more
than ``max_header_bytes``. It returns the parsed header facts and the bytes it
consumed, so the caller can go on streaming the rest of the file (pixels)
straight into encryption. pydicom is strict here (``force=False``).

It also works out where the pixel data must end, so that
:meth:`InstanceHeader.check_complete` can refuse a file truncated in its
pixels once the caller knows the total length.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from vault.errors import CorruptHeader, NotDicom, TooLarge, TransferSyntaxRefused, TruncatedFile

PREAMBLE = 128
_CHUNK = 64 * 1024
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_PIXEL_TAG_BYTES_LE = (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
_PIXEL_TAG_BYTES_BE = (b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09")
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
UNDEFINED_LENGTH = 0xFFFFFFFF
# VRs whose values are at most 64 characters per value (PS3.5 Table 6.2-1);
# a declared length far beyond that cannot be a cut file, only a corrupt one.
_SHORT_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"}
_SHORT_TEXT_MAX = 4096


@dataclass(frozen=True)
class PixelElement:
    """Where the top-level pixel data element sits in the file."""

    value_offset: int
    length: int  # UNDEFINED_LENGTH for encapsulated (compressed) pixel data

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED_LENGTH


@dataclass(frozen=True)
class InstanceHeader:
    """The parsed header of one instance (held in memory only, never logged)."""

    dataset: Dataset
    transfer_syntax_uid: str
    pixels: PixelElement | None
    header_length: int

    def completeness_check(self) -> CompletenessCheck:
        """A checker to feed every byte of the file, that refuses a file cut short."""
        if self.pixels is None or self.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
            return _NoCheck()
        if self.pixels.encapsulated:
            return _EncapsulatedCheck(self.pixels.value_offset)
        return _NativeCheck(self.pixels.value_offset + self.pixels.length)


class CompletenessCheck(Protocol):
    def feed(self, chunk: bytes) -> None:
        """The next bytes of the file, in order from its first byte."""
        ...

    def finish(self) -> None:
        """Raise TruncatedFile if the file ended before its pixel data did."""
        ...


class _NoCheck:
    def feed(self, chunk: bytes) -> None:
        return None

    def finish(self) -> None:
        return None


class _NativeCheck:
    """Native pixels have a declared length: the file must reach its end."""

    def __init__(self, end: int) -> None:
        self._end = end
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)

    def finish(self) -> None:
        if self._size < self._end:
            raise TruncatedFile("the file ends inside its pixel data")


class _EncapsulatedCheck:
    """Walks the item headers of encapsulated pixel data up to its delimiter.

    Only the 8-byte item headers are looked at; item values are skipped by
    their lengths. Elements after the delimiter (trailing padding) are fine.
    """

    def __init__(self, value_offset: int) -> None:
        self._next = value_offset
        self._position = 0
        self._header = bytearray()
        self._done = False

    def feed(self, chunk: bytes) -> None:
        start, end = self._position, self._position + len(chunk)
        self._position = end
        while not self._done:
            need = max(self._next + len(self._header), start)
            if need >= end:
                return
            take = min(self._next + 8, end) - need
            self._header += chunk[need - start : need - start + take]
            if len(self._header) < 8:
                return
            self._item(*struct.unpack("<HHI", self._header))
            self._header.clear()

    def _item(self, group: int, element: int, length: int) -> None:
        if (group, element) == (0xFFFE, 0xE0DD):
            self._done = True
        elif (group, element) == (0xFFFE, 0xE000) and length != UNDEFINED_LENGTH:
            self._next += 8 + length
        else:
            raise CorruptHeader("the compressed pixel data is malformed")

    def finish(self) -> None:
        if not self._done:
            raise TruncatedFile("the file ends inside its compressed pixel data")


def _is_truncation(exc: BaseException) -> bool:
    return isinstance(exc, EOFError) or "end of file" in str(exc).lower()


def _parse(buffer: bytes) -> tuple[FileDataset, int]:
    """Parse ``buffer`` up to the top-level pixel data; return where parsing stopped."""
    fp = io.BytesIO(buffer)
    dataset = pydicom.dcmread(fp, stop_before_pixels=True, force=False)
    return dataset, fp.tell()


def _candidates(buffer: bytes | bytearray, start: int) -> bool:
    patterns = _PIXEL_TAG_BYTES_LE + _PIXEL_TAG_BYTES_BE
    return any(buffer.find(p, start) != -1 for p in patterns)


def _pixel_element(buffer: bytes, offset: int, dataset: FileDataset) -> PixelElement | None:
    """Decode the pixel data element header at ``offset``, if that is where parsing stopped."""
    if len(buffer) < offset + 8:
        return None
    little = dataset.file_meta.TransferSyntaxUID != pydicom.uid.ExplicitVRBigEndian
    order = "<" if little else ">"
    group, element = struct.unpack_from(f"{order}HH", buffer, offset)
    if (group << 16 | element) not in _PIXEL_TAGS:
        return None
    implicit = dataset.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    vr = buffer[offset + 4 : offset + 6]
    if implicit or vr[:1] not in (b"O", b"U"):
        (length,) = struct.unpack_from(f"{order}I", buffer, offset + 4)
        return PixelElement(offset + 8, length)
    if vr in _LONG_VRS:
        if len(buffer) < offset + 12:
            return None
        (length,) = struct.unpack_from(f"{order}I", buffer, offset + 8)
        return PixelElement(offset + 12, length)
    return None


def _check_last_element(dataset: FileDataset, length: int) -> None:
    """Refuse a file whose last top-level element does not end where the file does.

    pydicom stops quietly when fewer bytes than an element header remain, and
    keeps a short last value: both mean the file was cut. A short-text value
    declared longer than any such value can be is a corrupt length instead.

    Raises:
        TruncatedFile, CorruptHeader.
    """
    if not dataset:
        raise TruncatedFile("the file ends inside its DICOM header")
    last = dataset.get_item(list(dataset.keys())[-1])
    value_tell, declared = getattr(last, "value_tell", None), getattr(last, "length", None)
    if value_tell is None or declared is None or declared == UNDEFINED_LENGTH:
        return
    if value_tell + declared == length:
        return
    if getattr(last, "VR", None) in _SHORT_TEXT_VRS and declared > _SHORT_TEXT_MAX:
        raise CorruptHeader("the DICOM header has an impossible value length")
    raise TruncatedFile("the file ends inside its DICOM header")


def _check_preamble(buffer: bytes) -> None:
    if len(buffer) < PREAMBLE + 4 or buffer[PREAMBLE : PREAMBLE + 4] != b"DICM":
        raise NotDicom("not a DICOM file: no DICM marker after the 128-byte preamble")


def read_header(source: BinaryIO, *, max_header_bytes: int) -> tuple[InstanceHeader, bytes]:
    """Read and parse the header at the front of ``source``.

    Parameters:
        source: a readable binary stream positioned at the start of a Part 10 file.
        max_header_bytes: refuse a header (everything before the pixels) longer than this.

    Returns:
        The parsed header and every byte consumed from ``source`` so far.

    Raises:
        NotDicom, CorruptHeader, TruncatedFile, TooLarge.
    """
    buffer = bytearray(source.read(PREAMBLE + 4))
    _check_preamble(bytes(buffer))
    buffer += source.read(_CHUNK)
    _refuse_deflated(buffer)
    exhausted = False
    searched = 0
    while True:
        chunk = source.read(_CHUNK)
        exhausted = not chunk
        buffer += chunk
        if exhausted or _candidates(buffer, max(searched - 4, 0)):
            header = _try_parse(bytes(buffer), exhausted)
            if header is not None:
                return header, bytes(buffer)
        searched = len(buffer)
        if len(buffer) > max_header_bytes:
            raise TooLarge("the DICOM header is larger than this service accepts")


def _refuse_deflated(buffer: bytes | bytearray) -> None:
    """Refuse a deflated data set before reading on: its header cannot be read
    without inflating the whole file, which this streaming reader does not do."""
    start = PREAMBLE + 4
    position = buffer.find(b"\x02\x00\x10\x00UI", start, start + 1024)
    if position < 0:
        return
    length = int.from_bytes(buffer[position + 6 : position + 8], "little")
    declared = bytes(buffer[position + 8 : position + 8 + length]).strip(b"\0 ")
    if declared == DeflatedExplicitVRLittleEndian.encode():
        raise TransferSyntaxRefused(
            "the encoding (Deflated Explicit VR Little Endian) is not accepted:"
            " send the files uncompressed or losslessly compressed"
        )


def _try_parse(buffer: bytes, exhausted: bool) -> InstanceHeader | None:
    """The header if ``buffer`` holds all of it; None if more bytes are needed."""
    try:
        dataset, stopped_at = _parse(buffer)
    except InvalidDicomError as exc:
        raise NotDicom("not a valid DICOM Part 10 file") from exc
    except (
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        NotImplementedError,
        struct.error,
        OverflowError,
    ) as exc:
        if not exhausted:
            return None
        if _is_truncation(exc):
            raise TruncatedFile("the file ends inside its DICOM header") from exc
        raise CorruptHeader("the DICOM header cannot be parsed") from exc
    if not hasattr(dataset, "file_meta") or "TransferSyntaxUID" not in dataset.file_meta:
        raise CorruptHeader("the file meta information has no transfer syntax")
    pixels = _pixel_element(buffer, stopped_at, dataset)
    if pixels is None and not exhausted:
        return None
    if pixels is None:
        _check_last_element(dataset, len(buffer))
    return InstanceHeader(
        dataset=dataset,
        transfer_syntax_uid=str(UID(dataset.file_meta.TransferSyntaxUID)),
        pixels=pixels,
        header_length=stopped_at,
    )
