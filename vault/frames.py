"""The frames of one stored object, read forward from its decrypting stream.

:class:`FrameReader` opens the object at its pixel data (:func:`vault.pixel_data.open_pixels`)
and yields each asked frame's bytes, at most :data:`vault.objects.CHUNK` at
a time, in the order asked; see :mod:`vault.pixel_data` for how frames are
found and when the object is reopened. Memory stays bounded whatever the
object's size: one piece in flight, plus an offset table for encapsulated data.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from vault.downloads import MemberOpener
from vault.errors import InvalidInput, NotAcceptable, NotFound
from vault.objects import StoredObject
from vault.pixel_data import (
    PIXEL_DATA,
    Opened,
    frame_count,
    native_frame_size,
    open_pixels,
    readable,
)

_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")  # JPEG(-LS), J2K, JP2
_HEAD = 8  # bytes of each fragment looked at for a start marker
_MAX_TABLE = 64 * 1024 * 1024  # an offset table longer than this is refused


@dataclass
class _Fragment:
    """A fragment whose first bytes were read: its frame, those bytes, the length left."""

    frame: int
    head: bytes
    left: int


def _offsets(opened: Opened) -> list[int]:
    """The frames' offsets: Extended Offset Table, else Basic Offset Table (read now)."""
    extended = opened.dataset.get("ExtendedOffsetTable")
    group, number, length = struct.unpack("<HHI", opened.forward.exactly(8))
    if group << 16 | number != _ITEM or length > _MAX_TABLE or length % 4:
        raise InvalidInput("the stored object's encapsulated pixel data are malformed")
    table = opened.forward.exactly(length)
    if extended:
        return list(struct.unpack(f"<{len(extended) // 8}Q", extended))
    return list(struct.unpack(f"<{length // 4}I", table))


def _item(opened: Opened) -> int | None:
    """The next fragment's length, or None at the sequence's end."""
    group, number, length = struct.unpack("<HHI", opened.forward.exactly(8))
    tag = group << 16 | number
    if tag == _SEQUENCE_END:
        return None
    if tag != _ITEM or length == 0xFFFFFFFF:
        raise InvalidInput("the stored object's encapsulated pixel data are malformed")
    return length


class FrameReader:
    """Frames of ``stored``, opened through ``open_member`` (the decrypting opener).

    The object is opened now, so that an unreadable header fails before any
    response; :attr:`count` is its number of frames. With ``tag``, only that
    pixel data element will do (Pixel Data, Float or Double Float Pixel Data).
    """

    def __init__(
        self, open_member: MemberOpener, stored: StoredObject, *, tag: int | None = None
    ) -> None:
        self._open_member, self._stored, self._tag = open_member, stored, tag
        self._opened = self._open()
        self.dataset = self._opened.dataset
        self.syntax = self._opened.syntax
        self.count = frame_count(self.dataset)
        self.encapsulated = self._opened.syntax.is_encapsulated

    def _open(self) -> Opened:
        opened = open_pixels(self._open_member, self._stored)
        if not readable(opened.syntax):
            opened.close()
            raise NotAcceptable("pixel data of a big-endian or deflated object need transcoding")
        element = opened.element
        wrong = self._tag is not None and element is not None and element.tag != self._tag
        if (
            element is None
            or wrong
            or (element.tag != PIXEL_DATA and opened.syntax.is_encapsulated)
        ):
            opened.close()
            raise NotFound("the instance has no such pixel data")
        self._next = 1  # the first frame the reader can still produce without reopening
        self._value_start = opened.forward.position
        self._offsets: list[int] | None = None
        self._pending: _Fragment | None = None
        self._items_start = self._frame = 0
        self._markers = False
        return opened

    def _reopen(self) -> None:
        self._opened.close()
        self._opened = self._open()

    def close(self) -> None:
        self._opened.close()

    def frames(self, numbers: list[int]) -> Iterator[tuple[int, Iterator[bytes]]]:
        """Each of ``numbers`` (1-based, checked by the caller) with its bytes' iterator.

        Each iterator must be consumed before the next frame is taken.
        """
        try:
            for number in numbers:
                if number < self._next:
                    self._reopen()
                read = self._encapsulated if self.encapsulated else self._native
                yield number, read(number)
        finally:
            self.close()

    def value(self) -> Iterator[bytes]:
        """The whole value of a native pixel data element."""
        element = self._opened.element
        if element is None or element.length is None:
            raise InvalidInput("the pixel data are encapsulated")
        try:
            yield from self._opened.forward.pieces(element.length)
        finally:
            self.close()

    @property
    def value_length(self) -> int | None:
        element = self._opened.element
        return None if element is None else element.length

    def _native(self, number: int) -> Iterator[bytes]:
        size = native_frame_size(self.dataset)
        element = self._opened.element
        if element is None or element.length is None or element.length < self.count * size:
            raise InvalidInput("the stored object's pixel data are shorter than its frames")
        forward = self._opened.forward
        forward.skip(self._value_start + (number - 1) * size - forward.position)
        self._next = number + 1
        yield from forward.pieces(size)

    # --- encapsulated ---------------------------------------------------------------

    def _fragment(self) -> _Fragment | None:
        """The next fragment, its frame decided, its first bytes read; None at the end."""
        if self._offsets is None:
            offsets = _offsets(self._opened)  # read even for one frame: the table is no fragment
            self._offsets = offsets if self.count > 1 else []
            self._items_start = self._opened.forward.position
        position = self._opened.forward.position - self._items_start
        length = _item(self._opened)
        if length is None:
            return None
        head = self._opened.forward.exactly(min(length, _HEAD))
        self._frame = self._frame_of(position, head)
        if self._frame > self.count:
            raise InvalidInput("the stored object has more fragments than its frames")
        return _Fragment(self._frame, head, length - len(head))

    def _frame_of(self, position: int, head: bytes) -> int:
        if self.count == 1:
            return 1
        if self._offsets:
            return bisect_right(self._offsets, position)
        if self._frame == 0:
            self._markers = head.startswith(_STARTS)
            return 1
        if self._markers and not head.startswith(_STARTS):
            return self._frame  # a continuation of the frame
        return self._frame + 1

    def _encapsulated(self, number: int) -> Iterator[bytes]:
        forward = self._opened.forward
        fragment, found = self._pending or self._fragment(), False
        self._pending = None
        while fragment is not None and fragment.frame <= number:
            if fragment.frame == number:
                found = True
                yield fragment.head
                yield from forward.pieces(fragment.left)
            else:
                forward.skip(fragment.left)
            fragment = self._fragment()
        self._pending, self._next = fragment, number + 1
        if not found:
            raise InvalidInput("the stored object has fewer fragments than its frames")
