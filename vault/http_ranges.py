"""HTTP conditional and range requests (RFC 9110 sections 13 and 14) for downloads.

Owns the reading of ``Range``, ``If-Range`` and ``If-None-Match`` against a
representation's strong ETag and length: :func:`not_modified` says when to
answer 304, :func:`requested_range` which single byte range to send (206),
or that the whole representation is due (200), or raises
:class:`~vault.errors.RangeNotSatisfiable` (416). As the RFC allows, a
request for several ranges, or a malformed one, is answered with the whole
representation; ``If-Range`` with a date (not an ETag) never matches, since
these representations carry no Last-Modified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from vault.errors import RangeNotSatisfiable

_BYTES = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` (inclusive) to ``stop`` (exclusive) of a representation."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` header value for this range of ``size`` bytes."""
        return f"bytes {self.start}-{self.stop - 1}/{size}"


def _tags(value: str) -> list[str]:
    """The entity tags in an ``If-None-Match`` list, weakness dropped (weak comparison)."""
    return [tag.strip().removeprefix("W/") for tag in value.split(",") if tag.strip()]


def not_modified(headers: Mapping[str, str], etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or ``*``): answer 304 Not Modified."""
    value = headers.get("if-none-match")
    if value is None:
        return False
    tags = _tags(value)
    return "*" in tags or etag in tags


def _parse(value: str, size: int) -> ByteRange | None:
    """The one range ``value`` asks for, None if it is malformed or asks for several."""
    match = _BYTES.fullmatch(value)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable("an empty suffix range", size=size)
        return ByteRange(max(size - suffix, 0), size)
    start = int(first)
    stop = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # invalid: ignored, as the RFC says
    if start >= size:
        raise RangeNotSatisfiable("the range starts past the end", size=size)
    return ByteRange(start, stop)


def requested_range(headers: Mapping[str, str], size: int, etag: str) -> ByteRange | None:
    """The byte range to send, or None to send the whole representation.

    Raises:
        RangeNotSatisfiable: the one range asked for lies past the end.
    """
    value = headers.get("range")
    if value is None:
        return None
    condition = headers.get("if-range")
    if condition is not None and condition.strip() != etag:
        return None  # changed since (or a date): the whole representation
    return _parse(value, size)
