"""Decoding and encoding the few element values the engine changes.

Kept elements are never decoded. Changed ones are: UIDs, dates and times
(ASCII), descriptors (in the data set's Specific Character Set, through
pydicom's codecs) and the replacement values written in their place.
:class:`LevelText` reads the string values of one parsed level.
"""

from __future__ import annotations

import struct

from pydicom.charset import convert_encodings, decode_bytes, encode_string

from deidentify._codec import UNDEFINED, Level, Syntax, implicit_vr

_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_NUMBER_FORMATS = {
    "US": "H",
    "SS": "h",
    "UL": "I",
    "SL": "i",
    "FL": "f",
    "FD": "d",
    "UV": "Q",
    "SV": "q",
}
DEFAULT_CHARSETS: tuple[str, ...] = ("iso8859",)


def charsets_of(raw: bytes) -> tuple[str, ...]:
    """Python codecs for a raw Specific Character Set (0008,0005) value."""
    terms = [t.strip(" \0") for t in raw.decode("ascii", "replace").split("\\")]
    return tuple(convert_encodings(terms or [""]))


def decode_text(raw: bytes, vr: str, charsets: tuple[str, ...]) -> list[str]:
    """The values of a string element (split on backslash where the VR allows)."""
    if vr in _CHARSET_VRS:
        delimiters = set() if vr in _SINGLE_VALUED else {0x5C}
        text = decode_bytes(raw, list(charsets), delimiters)
    else:
        text = raw.decode("ascii", "replace")
    text = text.rstrip(" \0")
    return [text] if vr in _SINGLE_VALUED else [v.strip(" \0") for v in text.split("\\")]


def encode_text(values: list[str], vr: str, charsets: tuple[str, ...]) -> bytes:
    """String values encoded and padded to even length (NUL for UI, space otherwise)."""
    text = "\\".join(values)
    if vr in _CHARSET_VRS and not text.isascii():
        data = encode_string(text, list(charsets))
    else:
        data = text.encode("ascii", "replace")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


def encode_value(value: object, vr: str, syntax: Syntax, charsets: tuple[str, ...]) -> bytes:
    """A replacement value (text, number or bytes) in ``vr`` and ``syntax``."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value + (b"\0" if len(value) % 2 else b"")
    if vr in _NUMBER_FORMATS:
        return struct.pack(syntax.order + _NUMBER_FORMATS[vr], value)
    if vr == "AT":
        tag = int(value)  # type: ignore[call-overload]
        return struct.pack(syntax.order + "HH", tag >> 16, tag & 0xFFFF)
    values = value if isinstance(value, list) else [str(value)]
    return encode_text(values, vr, charsets)


_CHARSET_TAG = 0x00080005


class LevelText:
    """Decoded access to the string values of one parsed level (a data set or
    an item), in its Specific Character Set or the one it inherits."""

    def __init__(
        self,
        buffer: bytes | memoryview,
        level: Level,
        charsets: tuple[str, ...] = DEFAULT_CHARSETS,
    ) -> None:
        self.buf = buffer
        self.by_tag = level.by_tag
        self.syntax = level.syntax
        self.charsets = charsets
        charset = self.by_tag.get(_CHARSET_TAG)
        if charset is not None and charset.length not in (0, UNDEFINED):
            self.charsets = charsets_of(self.raw(_CHARSET_TAG) or b"")

    def __contains__(self, tag: int) -> bool:
        return tag in self.by_tag

    def raw(self, tag: int) -> bytes | None:
        """The value bytes of ``tag``; ``None`` if absent or of undefined length."""
        element = self.by_tag.get(tag)
        if element is None or element.length == UNDEFINED:
            return None
        return bytes(self.buf[element.value_start : element.value_start + element.length])

    def _decoded(self, tag: int) -> list[str]:
        element = self.by_tag.get(tag)
        raw = self.raw(tag) if element is not None and element.items is None else None
        if not raw or element is None:
            return []
        vr = implicit_vr(tag) if element.vr == "UN" else element.vr
        if vr == "UN":  # no dictionary VR either: read it as Latin-1 text
            return [raw.decode("latin-1")]
        return decode_text(raw, vr, self.charsets)

    def values(self, tag: int) -> list[str]:
        """The non-empty values of ``tag`` (none if absent, empty or a sequence)."""
        return [value for value in self._decoded(tag) if value]

    def text(self, tag: int) -> str:
        """The value of ``tag`` as one string (values joined by backslash), stripped."""
        return "\\".join(self._decoded(tag)).strip()
