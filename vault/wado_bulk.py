"""WADO-RS frames and bulk data (PS3.18 10.4): frame lists, media types, BulkDataURIs, bodies.

Frames are served as stored, never transcoded. Native (uncompressed) frames
are ``application/octet-stream`` in Explicit VR Little Endian (their bytes
are the same in Implicit VR Little Endian). Encapsulated frames keep their
codestream, labelled with their syntax's media type (``image/jls``,
``image/jpeg``, ``image/jp2``, ...) or, for a request naming
``application/octet-stream`` with ``transfer-syntax=*`` or the stored
syntax, as octet-stream; each part's Content-Type names the transfer syntax.
:func:`frame_media` picks the first media range of ``Accept`` that can be
served so, and answers 406 when none can.

:func:`frame_numbers` checks a frame list: 1-based integers, at most
:data:`MAX_FRAMES` of them, none beyond the instance's frames (400 with the
reason otherwise: the instance exists, the request is malformed for it).

Bulk data: metadata replace Pixel Data (and Float and Double Float Pixel
Data) and every binary value (OB, OD, OF, OL, OV, OW, UN) longer than
:data:`BULK_THRESHOLD` bytes by a ``BulkDataURI`` naming
``.../instances/{uid}/bulkdata/{path}``, where ``path`` is the attribute's
tag, with sequence item indices between tags for nested ones
(``00880200.0.7FE00010``); the UIDs are the pseudonymised ones, and tags
carry no PHI.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from vault.errors import BadRequest, NotAcceptable, NotFound
from vault.wado import media_ranges

OCTET = "application/octet-stream"
MAX_FRAMES = 256
# Each step back in a frame list reopens and decrypts the object from its start
# (vault.frames): a list of 256 frames in descending order would cost 256 reads.
MAX_STEPS_BACK = 16
BULK_THRESHOLD = 1024
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}
_ANY = (None, "*")


def frame_numbers(text: str, count: int) -> list[int]:
    """The frames ``text`` (a comma-separated frame list) asks for, in its order.

    Raises:
        BadRequest: not 1-based integers, more than :data:`MAX_FRAMES`, beyond
            ``count``, or stepping back more than :data:`MAX_STEPS_BACK` times.
    """
    items = [item.strip() for item in text.split(",")]
    if not all(item.isascii() and item.isdigit() for item in items):
        raise BadRequest("the frame list must be comma-separated positive integers")
    if len(items) > MAX_FRAMES:
        raise BadRequest(f"at most {MAX_FRAMES} frames can be asked for at once")
    numbers = [int(item) for item in items]
    if min(numbers) < 1:
        raise BadRequest("frame numbers start at 1")
    if max(numbers) > count:
        raise BadRequest(f"the instance has {count} frame(s); a frame asked for is beyond them")
    if sum(later < earlier for earlier, later in pairwise(numbers)) > MAX_STEPS_BACK:
        raise BadRequest(
            f"the frame list steps back more than {MAX_STEPS_BACK} times;"
            " ask for frames in ascending order or in several requests"
        )
    return numbers


def _own_media(syntax: UID) -> tuple[str, str]:
    """The media type and the transfer syntax frames of ``syntax`` are served in."""
    if not syntax.is_encapsulated:
        return OCTET, ExplicitVRLittleEndian
    return _MEDIA.get(syntax, OCTET), syntax


def _range_serves(kind: str, wanted: str | None, syntax: UID) -> str | None:
    """The part media type a ``multipart/related`` range serves frames in, if any."""
    media, served = _own_media(syntax)
    kind = _ALIASES.get(kind, kind)
    if kind == "*/*" and wanted in (*_ANY, served):
        return media
    if kind in (OCTET, "application/*"):
        native = not syntax.is_encapsulated
        allowed = (*_ANY, served, syntax) if native else ("*", syntax)
        return OCTET if wanted in allowed else None
    family = kind.endswith("/*") and media.startswith(kind[:-1])
    if (kind == media or family) and wanted in (*_ANY, served):
        return media
    return None


def frame_media(accept: str | None, syntax: UID) -> str:
    """The media type of the frame parts ``accept`` lets this service send, as stored.

    Raises:
        NotAcceptable: every range asks for a type or syntax that needs transcoding.
    """
    media, served = _own_media(syntax)
    for item in media_ranges(accept or "*/*"):
        if item.media in ("*/*", "multipart/*"):
            return media
        if item.media == "multipart/related":
            kind = item.params.get("type", "*/*").lower()
            chosen = _range_serves(kind, item.params.get("transfer-syntax"), syntax)
            if chosen:
                return chosen
    raise NotAcceptable(
        f'frames are served as stored: multipart/related; type="{media}" (transfer-syntax '
        f'{served}) or type="{OCTET}" with transfer-syntax=*; the request accepts neither'
    )


def check_octet_accept(accept: str | None) -> None:
    """Accept a bulk data request whose ranges allow ``application/octet-stream`` parts.

    Raises:
        NotAcceptable: no range does.
    """
    for item in media_ranges(accept or "*/*"):
        if item.media in ("*/*", "multipart/*"):
            return
        kind = item.params.get("type", "*/*").lower()
        if item.media == "multipart/related" and kind in ("*/*", "application/*", OCTET):
            return
    raise NotAcceptable(f'bulk data are served as multipart/related; type="{OCTET}"')


class PartStream:
    """A ``multipart/related`` body whose parts are streamed and whose lengths are not known."""

    def __init__(self, media: str) -> None:
        self.media = media.split(";")[0].strip()
        self.boundary = secrets.token_hex(16)

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.media}"; boundary={self.boundary}'

    def body(self, parts: Iterable[tuple[str, Iterator[bytes]]]) -> Iterator[bytes]:
        """The body of ``parts``, each its Content-Type and its bytes.

        A part's head goes out with its first bytes, so that the body's first
        piece already holds data (and a failure to read it answers an error).
        """
        for index, (content_type, data) in enumerate(parts):
            lead = "\r\n" if index else ""
            head = f"{lead}--{self.boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
            for piece in data:
                yield head + piece if head else piece
                head = b""
            if head:
                yield head
        yield f"\r\n--{self.boundary}--\r\n".encode("ascii")


def part_type(media: str, syntax: UID) -> str:
    """A frame part's Content-Type: ``media`` with the syntax its bytes are in."""
    octet_as_stored = media == OCTET and syntax.is_encapsulated
    return f"{media}; transfer-syntax={syntax if octet_as_stored else _own_media(syntax)[1]}"


# --- BulkDataURIs -----------------------------------------------------------------


def _is_bulk(element: Any) -> bool:
    return element.VR in BULK_VRS and len(element.value or b"") > BULK_THRESHOLD


def _json_of(dataset: Dataset, uri: Callable[[str], str], path: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for element in dataset:
        key = f"{element.tag:08X}"
        here = f"{path}.{key}" if path else key
        try:
            if element.VR == "SQ":
                items = [
                    _json_of(item, uri, f"{here}.{index}")
                    for index, item in enumerate(element.value)
                ]
                result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            elif _is_bulk(element):
                result[key] = {"vr": element.VR, "BulkDataURI": uri(here)}
            else:
                result[key] = element.to_json_dict(None, 0)
        except (ValueError, TypeError, OverflowError):
            continue  # an invalid value is left out, as pydicom's suppress_invalid_tags does
    return result


def json_with_bulk(dataset: Dataset, uri: Callable[[str], str]) -> dict[str, Any]:
    """``dataset`` in the DICOM JSON model, bulk values replaced by ``uri(path)``."""
    return _json_of(dataset, uri, "")


def bulk_value(dataset: Dataset, path: str) -> bytes:
    """The value of the binary attribute at ``path`` (tags and item indices, dotted).

    Raises:
        NotFound: no such attribute, or not a binary one.
    """
    steps = path.split(".")
    current: Any = dataset
    for index, step in enumerate(steps):
        if index % 2:
            items = current
            position = int(step)
            if position >= len(items):
                raise NotFound("no such bulk data")
            current = items[position]
            continue
        element = current.get(int(step, 16))
        if element is None:
            raise NotFound("no such bulk data")
        last = index == len(steps) - 1
        if last and element.VR in BULK_VRS and element.value:
            return bytes(element.value)
        if last or element.VR != "SQ":
            raise NotFound("no such bulk data")
        current = element.value
    raise NotFound("no such bulk data")
