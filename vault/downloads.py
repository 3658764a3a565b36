"""Downloads of pseudonymised data: one instance, or a study or series as a streamed ZIP.

An archive is laid out by :mod:`vault.zip_layout` (stored members, fixed
timestamps and attributes, members in the order given), so its length, its
ETag and the offset of every byte are known before anything is decrypted.
That makes any byte range producible on its own: :func:`stream_archive`
walks the layout, skips the members before the range without opening them,
decrypts only the members the range touches, and stops at its end. Memory
stays constant whatever the archive's size (one chunk in flight).

Each member is read through :func:`vault.objects.open_decrypted`, which
authenticates every segment and checks the catalogued SHA-256 at the end; a
member read to its end has its last piece held back until that check passed,
so a tampered or truncated object raises in the middle of the stream and the
transfer is aborted, never completed with wrong bytes.

The data descriptors and the central directory carry each member's CRC-32.
It is computed while the member streams; for a range that starts past a
member, it comes from a :class:`CrcCache` (by plaintext SHA-256, so entries
never go stale) or, failing that, from reading the member once more.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from vault.core import Vault
from vault.http_ranges import ByteRange
from vault.objects import CHUNK, StoredObject, open_decrypted
from vault.zip_layout import (
    Part,
    Piece,
    Plan,
    central_entry,
    descriptor,
    end_records,
    local_header,
    plan_archive,
)

MemberOpener = Callable[[StoredObject], BinaryIO]


def opener(vault: Vault, key_ids: set[str]) -> MemberOpener:
    """Opens objects of ``vault`` with their data keys, all unwrapped now (before any byte)."""
    keys = {key_id: vault.keyring.data_key(key_id) for key_id in key_ids}
    return lambda stored: open_decrypted(vault.store, keys[stored.key_id], stored)


@dataclass(frozen=True)
class ArchiveMember:
    """One file of an archive: its name inside the ZIP and the object holding it."""

    name: str
    stored: StoredObject


class CrcCache:
    """CRC-32 of verified plaintexts by SHA-256, the most recent ``capacity`` kept."""

    def __init__(self, capacity: int = 20_000) -> None:
        self._capacity = capacity
        self._values: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> int | None:
        with self._lock:
            value = self._values.get(sha256)
            if value is not None:
                self._values.move_to_end(sha256)
            return value

    def put(self, sha256: str, crc: int) -> None:
        with self._lock:
            self._values[sha256] = crc
            self._values.move_to_end(sha256)
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)


def archive_etag(members: Sequence[ArchiveMember]) -> str:
    """A strong ETag for the archive of ``members``: the same members give the same tag."""
    hasher = hashlib.sha256()
    for member in members:
        hasher.update(f"{member.name}\0{member.stored.sha256}\n".encode())
    return f'"{hasher.hexdigest()}"'


def archive_plan(members: Sequence[ArchiveMember]) -> Plan:
    """The byte layout of the archive of ``members``."""
    return plan_archive([(member.name, member.stored.size) for member in members])


def archive_size(members: Sequence[ArchiveMember]) -> int:
    """The exact byte length of the archive of ``members``."""
    return archive_plan(members).total


def _span(
    source: BinaryIO, lo: int, hi: int, whole: bool, chunk: int
) -> Generator[bytes, None, int]:
    """Plaintext bytes ``[lo, hi)`` of ``source``; returns the CRC-32 of what was read.

    With ``whole`` the source is read to its end (which verifies its checksum)
    and the last piece is held back until then.
    """
    position, crc, held = 0, 0, b""
    while whole or position < hi:
        data = source.read(chunk if whole else min(chunk, hi - position))
        if not data:
            break
        crc = zlib.crc32(data, crc)
        piece = data[max(lo - position, 0) : max(hi - position, 0)]
        position += len(data)
        if piece:
            if held:
                yield held
            held = piece
    if held:
        yield held
    return crc


def stream_object(
    stored: StoredObject,
    open_member: MemberOpener,
    *,
    byte_range: ByteRange | None = None,
    chunk: int = CHUNK,
) -> Iterator[bytes]:
    """The plaintext of one object (or ``byte_range`` of it), ``chunk`` bytes at a time.

    A body reaching the object's end is released whole only after the object
    matched its checksum.

    Raises (while iterating):
        IntegrityError: the object is tampered, truncated or does not match its checksum.
    """
    lo, hi = (byte_range.start, byte_range.stop) if byte_range else (0, stored.size)
    with open_member(stored) as source:
        yield from _span(source, lo, hi, hi >= stored.size, chunk)


class _Batcher:
    """Gathers small pieces so that the stream yields about ``chunk`` bytes at a time."""

    def __init__(self, chunk: int) -> None:
        self._chunk = chunk
        self._parts: list[bytes] = []
        self._pending = 0

    def add(self, data: bytes) -> Iterator[bytes]:
        self._parts.append(data)
        self._pending += len(data)
        if self._pending >= self._chunk:
            yield self.take()

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self._pending = 0
        return data


class _ArchiveWriter:
    """Produces the bytes of one archive, or of one range of it."""

    def __init__(
        self,
        members: Sequence[ArchiveMember],
        open_member: MemberOpener,
        crcs: CrcCache,
        chunk: int,
    ) -> None:
        self._members = members
        self._open = open_member
        self._crcs = crcs
        self._chunk = chunk
        self._plan = archive_plan(members)

    @property
    def total(self) -> int:
        return self._plan.total

    def produce(self, start: int, stop: int) -> Iterator[bytes]:
        out = _Batcher(self._chunk)
        for piece in self._plan.pieces():
            if piece.start >= stop:
                break
            if piece.start + piece.length <= start:
                continue
            lo, hi = max(start - piece.start, 0), min(stop - piece.start, piece.length)
            if piece.part is Part.DATA:
                for data in self._data(piece.index, lo, hi):
                    yield from out.add(data)
            else:
                yield from out.add(self._record(piece)[lo:hi])
        if last := out.take():
            yield last

    def _data(self, index: int, lo: int, hi: int, *, whole: bool = False) -> Iterator[bytes]:
        """Bytes ``[lo, hi)`` of member ``index``; read whole (and its CRC kept) if they end it."""
        stored = self._members[index].stored
        whole = whole or hi >= stored.size
        with self._open(stored) as source:
            crc = yield from _span(source, lo, hi, whole, self._chunk)
        if whole:
            self._crcs.put(stored.sha256, crc)

    def _crc(self, index: int) -> int:
        stored = self._members[index].stored
        known = self._crcs.get(stored.sha256)
        if known is None:
            for _ in self._data(index, 0, 0, whole=True):
                pass  # reads the whole member once, for its CRC; yields nothing
            known = self._crcs.get(stored.sha256)
        if known is None:
            raise RuntimeError("a member's CRC could not be established")
        return known

    def _record(self, piece: Piece) -> bytes:
        if piece.part is Part.END:
            return end_records(self._plan)
        entry = self._plan.entries[piece.index]
        if piece.part is Part.HEADER:
            return local_header(entry)
        if piece.part is Part.DESCRIPTOR:
            return descriptor(entry, self._crc(piece.index))
        return central_entry(entry, self._crc(piece.index))


def stream_archive(
    members: Sequence[ArchiveMember],
    open_member: MemberOpener,
    *,
    byte_range: ByteRange | None = None,
    crcs: CrcCache | None = None,
    chunk: int = CHUNK,
) -> Iterator[bytes]:
    """The ZIP of ``members`` (or ``byte_range`` of it), produced as it is yielded.

    Pieces are about ``chunk`` bytes; the first one of a whole archive holds
    member data, so the first ``next()`` already proves the first object
    opens and decrypts.

    Raises (while iterating):
        IntegrityError: a member is tampered, truncated or does not match its checksum.
        KeyDestroyedError: a member's data key was destroyed.
    """
    writer = _ArchiveWriter(members, open_member, crcs or CrcCache(), chunk)
    start, stop = (byte_range.start, byte_range.stop) if byte_range else (0, writer.total)
    return writer.produce(start, stop)
