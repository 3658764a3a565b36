"""Reading and writing DICOM data elements straight from and to Part 10 bytes.

The engine works on the encoded stream rather than on pydicom objects: an
element kept as it is is copied as the very bytes it came in (pixel data,
geometry, rescale values: bit-exact, and nothing decoded), and only elements
whose value changes are encoded anew. This module parses a file into a tree
of :class:`Level` (a data set or a sequence item) and :class:`Element`
(offsets into the buffer), and encodes element headers and values.

Handled: Explicit and Implicit VR Little Endian, Explicit VR Big Endian,
Deflated Explicit VR Little Endian, encapsulated (compressed) pixel data,
sequences and items of defined or undefined length, and sequences carried as
UN (PS3.5 6.2.2: implicit little endian inside). Anything not well formed
raises :class:`MalformedError`, whose message carries no data.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from functools import cache

from pydicom.datadict import dictionary_VR

LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


class MalformedError(ValueError):
    """The byte stream is not well-formed DICOM (says where in the structure, never what)."""


@dataclass(frozen=True, slots=True)
class Syntax:
    """How elements are encoded: implicit or explicit VR, byte order."""

    implicit: bool
    little: bool

    @property
    def order(self) -> str:
        return "<" if self.little else ">"


EXPLICIT_LE = Syntax(implicit=False, little=True)
IMPLICIT_LE = Syntax(implicit=True, little=True)
EXPLICIT_BE = Syntax(implicit=False, little=False)


@dataclass(slots=True)
class Element:
    """One element: its tag, VR and where its bytes are in the buffer."""

    tag: int
    vr: str
    start: int
    value_start: int
    length: int  # value length in the buffer, UNDEFINED if delimited
    end: int  # just past the element, delimiters included
    items: list[Level] | None = None  # for sequences
    item_syntax: Syntax | None = None  # differs from the level's for UN sequences


@dataclass(slots=True)
class Level:
    """A data set or a sequence item: its elements, in stream order."""

    elements: list[Element]
    syntax: Syntax
    by_tag: dict[int, Element] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_tag = {e.tag: e for e in self.elements}


@cache
def implicit_vr(tag: int) -> str:
    """The dictionary VR of ``tag`` (first choice of ambiguous ones), else UN."""
    if tag >> 16 & 1:
        return "LO" if 0x0010 <= tag & 0xFFFF <= 0x00FF else "UN"
    try:
        return dictionary_VR(tag).split(" ")[0]
    except KeyError:
        return "UN"


class Parser:
    """Parses one buffer into levels and elements; every read is bounds-checked."""

    def __init__(self, buffer: bytes | memoryview) -> None:
        self.buf = buffer
        self.size = len(buffer)

    def _unpack(self, fmt: str, pos: int) -> tuple[int, ...]:
        if pos + struct.calcsize(fmt) > self.size:
            raise MalformedError("truncated element")
        return struct.unpack_from(fmt, self.buf, pos)

    def header(self, pos: int, syntax: Syntax) -> tuple[int, str, int, int]:
        """``(tag, vr, value start, value length)`` of the element at ``pos``."""
        order = syntax.order
        group, elem = self._unpack(order + "HH", pos)
        tag = group << 16 | elem
        if group == 0xFFFE or syntax.implicit:
            (length,) = self._unpack(order + "I", pos + 4)
            return tag, "" if group == 0xFFFE else implicit_vr(tag), pos + 8, length
        raw_vr = bytes(self.buf[pos + 4 : pos + 6])
        if len(raw_vr) != 2 or not raw_vr.isalpha() or not raw_vr.isupper():
            raise MalformedError("invalid VR")
        vr = raw_vr.decode("ascii")
        if vr in LONG_VRS:
            (length,) = self._unpack(order + "I", pos + 8)
            return tag, vr, pos + 12, length
        (length,) = self._unpack(order + "H", pos + 6)
        return tag, vr, pos + 8, length

    def element(self, pos: int, syntax: Syntax) -> Element:
        tag, vr, value_start, length = self.header(pos, syntax)
        element = Element(tag, vr, pos, value_start, length, value_start)
        if length == UNDEFINED:
            if vr in BULK_VRS or tag == PIXEL_DATA:
                element.end = self._skip_fragments(value_start, syntax)
                return element
            element.item_syntax = IMPLICIT_LE if vr == "UN" else syntax
            element.items, element.end = self.items(value_start, None, element.item_syntax)
            return element
        element.end = value_start + length
        if element.end > self.size:
            raise MalformedError("value runs past the end")
        if vr == "SQ" or (vr == "UN" and implicit_vr(tag) == "SQ" and length):
            element.item_syntax = IMPLICIT_LE if vr == "UN" else syntax
            element.items, _ = self.items(value_start, element.end, element.item_syntax)
        return element

    def items(self, pos: int, end: int | None, syntax: Syntax) -> tuple[list[Level], int]:
        """The items of a sequence value from ``pos`` to ``end`` (None: delimited)."""
        items = []
        while end is None or pos < end:
            tag, _, value_start, length = self.header(pos, Syntax(True, syntax.little))
            if tag == SEQUENCE_END:
                return items, value_start if end is None else end
            if tag != ITEM:
                raise MalformedError("expected a sequence item")
            if length == UNDEFINED:
                elements, pos = self.level(value_start, None, syntax)
            else:
                elements, _ = self.level(value_start, value_start + length, syntax)
                pos = value_start + length
            items.append(Level(elements, syntax))
        if end is None:
            raise MalformedError("sequence without delimiter")
        return items, end

    def level(self, pos: int, end: int | None, syntax: Syntax) -> tuple[list[Element], int]:
        """Elements from ``pos`` to ``end``, or to the item delimiter when ``end`` is None."""
        limit = self.size if end is None else end
        elements = []
        while pos < limit:
            if end is None and self._unpack(syntax.order + "HH", pos) == (0xFFFE, 0xE00D):
                return elements, pos + 8
            element = self.element(pos, syntax)
            if element.end > limit:
                raise MalformedError("element runs past its item")
            elements.append(element)
            pos = element.end
        if end is None:
            raise MalformedError("item without delimiter")
        return elements, pos

    def _skip_fragments(self, pos: int, syntax: Syntax) -> int:
        item_syntax = Syntax(True, syntax.little)
        while True:
            tag, _, value_start, length = self.header(pos, item_syntax)
            if tag == SEQUENCE_END:
                return value_start
            if tag != ITEM or length == UNDEFINED or value_start + length > self.size:
                raise MalformedError("bad encapsulated fragment")
            pos = value_start + length


@dataclass(slots=True)
class Part10:
    """A parsed Part 10 file: its file meta elements, transfer syntax and data set."""

    source: bytes  # the file as given: ``meta`` points into it
    meta: Level
    transfer_syntax: str
    buffer: bytes | memoryview  # the data set (inflated if deflated): ``dataset`` points in
    dataset: Level


def parse_part10(data: bytes) -> Part10:
    """Parse preamble, file meta and data set; inflate a deflated data set."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise MalformedError("no DICM prefix")
    parser = Parser(data)
    meta_elements, pos = [], 132
    while pos + 4 <= len(data) and parser._unpack("<H", pos)[0] == 0x0002:
        element = parser.element(pos, EXPLICIT_LE)
        meta_elements.append(element)
        pos = element.end
    meta = Level(meta_elements, EXPLICIT_LE)
    syntax_element = meta.by_tag.get(0x00020010)
    if syntax_element is None:
        raise MalformedError("no transfer syntax")
    ts = bytes(data[syntax_element.value_start : syntax_element.end]).decode("ascii", "replace")
    ts = ts.strip("\0 ")
    body: bytes | memoryview = memoryview(data)[pos:]
    if ts == DEFLATED:
        try:
            body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body)
        except zlib.error as exc:
            raise MalformedError("bad deflated data") from exc
    syntax = {IMPLICIT_LITTLE: IMPLICIT_LE, EXPLICIT_BIG: EXPLICIT_BE}.get(ts, EXPLICIT_LE)
    body_parser = Parser(body)
    elements, _ = body_parser.level(0, len(body), syntax)
    return Part10(data, meta, ts, body, Level(elements, syntax))


def header_bytes(tag: int, vr: str, length: int, syntax: Syntax) -> bytes:
    """An element header in ``syntax``."""
    order = syntax.order
    group, elem = tag >> 16, tag & 0xFFFF
    if syntax.implicit:
        return struct.pack(order + "HHI", group, elem, length)
    if vr in LONG_VRS:
        return struct.pack(order + "HH2s2xI", group, elem, vr.encode(), length)
    if length > 0xFFFF:
        raise MalformedError("value too long for its VR")
    return struct.pack(order + "HH2sH", group, elem, vr.encode(), length)


def item_bytes(body: bytes, syntax: Syntax) -> bytes:
    """A sequence item of defined length."""
    return struct.pack(syntax.order + "HHI", 0xFFFE, 0xE000, len(body)) + body


def deflate(body: bytes) -> bytes:
    """Raw deflate, as the Deflated transfer syntax wants it."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()
