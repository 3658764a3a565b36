"""Decoding and encoding the few element values the engine changes.

Kept elements are never decoded. Changed ones are: UIDs, dates and times
(ASCII), descriptors (in the data set's Specific Character Set, through
pydicom's codecs) and the replacement values written in their place.
"""

from __future__ import annotations

import struct

from pydicom.charset import convert_encodings, decode_bytes, encode_string

from deidentify._codec import Syntax

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
