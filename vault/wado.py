"""WADO-RS (PS3.18 section 10.4) framing: Accept negotiation and multipart/related bodies.

Instances are served as stored (bit-identical to the archive members), in
their stored transfer syntax; nothing is transcoded. :func:`check_accept`
therefore accepts ``multipart/related; type="application/dicom"`` with no
``transfer-syntax`` parameter or ``*`` (and ``*/*`` or ``multipart/*``), or
media ranges whose syntaxes together cover every instance's stored syntax
(a study stored in two syntaxes is served to ``Accept`` listing both, each
part naming its own), and refuses anything else with
:class:`~vault.errors.NotAcceptable` (406). Since DICOM 2016c, a request
without ``transfer-syntax`` asks for Explicit VR Little Endian; serving the
stored syntax instead is a deliberate departure: the engineers' copies stay
bit-identical to the archive, and pydicom, dicomweb-client and 3D Slicer read
every syntax the policy admits. :class:`Multipart` lays out the
body: the parts' headers are fixed, so the exact length is known before a
byte is sent, and :meth:`Multipart.stream` produces it with each instance's
bytes read through the decrypting reader (constant memory).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vault.downloads import MemberOpener, stream_object
from vault.errors import NotAcceptable
from vault.objects import StoredObject

DICOM = "application/dicom"
_ANY_SYNTAX = "*"


@dataclass(frozen=True)
class _MediaRange:
    media: str
    params: dict[str, str]


def media_ranges(accept: str) -> Iterator[_MediaRange]:
    """The media ranges of an Accept header value, those with q=0 left out."""
    for item in accept.split(","):
        media, *rest = [part.strip() for part in item.split(";")]
        params = {}
        for param in rest:
            name, _, value = param.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        if params.get("q") not in ("0", "0.0", "0.00", "0.000"):
            yield _MediaRange(media.lower(), params)


def _syntax_allowed(media_range: _MediaRange) -> str | None:
    """The transfer syntax a media range allows (``*`` for any), or None if no DICOM."""
    if media_range.media in ("*/*", "multipart/*"):
        return _ANY_SYNTAX
    if media_range.media != "multipart/related":
        return None
    if media_range.params.get("type", DICOM).lower() not in (DICOM, "application/*", "*/*"):
        return None
    return media_range.params.get("transfer-syntax", _ANY_SYNTAX)


def check_accept(accept: str | None, syntaxes: set[str]) -> None:
    """Accept the request if its media ranges together allow every stored syntax.

    Raises:
        NotAcceptable: some instance's stored syntax is not acceptable.
    """
    if not accept:
        return
    allowed = {_syntax_allowed(item) for item in media_ranges(accept)} - {None}
    if _ANY_SYNTAX in allowed or syntaxes <= allowed:
        return
    raise NotAcceptable(
        'instances are served as multipart/related; type="application/dicom" '
        "in their stored transfer syntax, which the request does not accept"
    )


@dataclass(frozen=True)
class Part:
    """One instance in a multipart body: its object and its transfer syntax."""

    stored: StoredObject
    transfer_syntax_uid: str


class Multipart:
    """A ``multipart/related; type="application/dicom"`` body of ``parts``."""

    def __init__(self, parts: Sequence[Part], boundary: str | None = None) -> None:
        self.parts = parts
        self.boundary = boundary or secrets.token_hex(16)

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{DICOM}"; boundary={self.boundary}'

    def _head(self, index: int) -> bytes:
        lead = b"\r\n" if index else b""
        syntax = self.parts[index].transfer_syntax_uid
        head = f"--{self.boundary}\r\nContent-Type: {DICOM}; transfer-syntax={syntax}\r\n\r\n"
        return lead + head.encode("ascii")

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("ascii")

    @property
    def size(self) -> int:
        heads = sum(len(self._head(index)) for index in range(len(self.parts)))
        return heads + sum(part.stored.size for part in self.parts) + len(self._tail())

    def stream(self, open_member: MemberOpener) -> Iterator[bytes]:
        """The body; each instance's last piece is held back until it matched its checksum.

        Raises (while iterating):
            IntegrityError: an instance is tampered or truncated; the transfer is aborted.
        """
        for index, part in enumerate(self.parts):
            head = self._head(index)
            for piece in stream_object(part.stored, open_member):
                yield head + piece if head else piece
                head = b""
        yield self._tail()
