"""Downloads of pseudonymised data: one instance, or a whole study as a streamed ZIP.

A study archive is written by :mod:`zipfile` in stored mode (pixel data does
not compress) into a write-only sink and handed out chunk by chunk as it is
produced, so memory stays constant whatever the study's size. Each member is
read through :func:`vault.objects.open_decrypted`, which authenticates every
segment and checks the catalogued SHA-256 at the end: a tampered or truncated
object raises in the middle of the stream and the transfer is aborted, never
completed with wrong bytes.

The output is deterministic (members in a fixed order, fixed timestamps and
attributes), so :func:`archive_etag` is stable and :func:`archive_size` can
give the exact length before a byte is written.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from vault.objects import CHUNK, StoredObject

# 1980-01-01 00:00:00, the earliest ZIP timestamp: the same bytes on every run.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MODE = 0o100644 << 16
# Per-member overhead of a stored member written to a non-seekable sink
# without ZIP64: local header, data descriptor, central directory entry.
_LOCAL_HEADER = 30
_DATA_DESCRIPTOR = 16
_CENTRAL_ENTRY = 46
_END_RECORD = 22
_MAX_PLAIN_MEMBERS = 0xFFFF

MemberOpener = Callable[[StoredObject], BinaryIO]


@dataclass(frozen=True)
class ArchiveMember:
    """One file of an archive: its name inside the ZIP and the object holding it."""

    name: str
    stored: StoredObject


def archive_etag(members: Sequence[ArchiveMember]) -> str:
    """A strong ETag for the archive of ``members``: the same members give the same tag."""
    hasher = hashlib.sha256()
    for member in members:
        hasher.update(f"{member.name}\0{member.stored.sha256}\n".encode())
    return f'"{hasher.hexdigest()}"'


def archive_size(members: Sequence[ArchiveMember]) -> int | None:
    """The exact byte length of the archive of ``members``, or None when it needs ZIP64.

    Stored members written to a non-seekable sink have fixed-size headers, so
    the length follows from the names and sizes alone. Archives that need
    ZIP64 records (over 2 GiB or 65,535 members) are sent without a length.
    """
    if len(members) >= _MAX_PLAIN_MEMBERS:
        return None
    total = _END_RECORD
    for member in members:
        name = len(member.name.encode())
        total += _LOCAL_HEADER + _DATA_DESCRIPTOR + _CENTRAL_ENTRY + 2 * name
        total += member.stored.size
    return total if total <= zipfile.ZIP64_LIMIT else None


class _Spool:
    """A write-only, non-seekable sink whose contents are taken out as they come."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.pending = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self.pending += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: :meth:`take` drains the sink."""

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self.pending = 0
        return data


def _member_info(member: ArchiveMember) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(member.name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = _MODE
    info.file_size = member.stored.size  # lets zipfile choose ZIP64 up front
    return info


def stream_archive(
    members: Sequence[ArchiveMember], open_member: MemberOpener, *, chunk: int = CHUNK
) -> Iterator[bytes]:
    """The ZIP of ``members``, produced as it is yielded (roughly ``chunk`` bytes at a time).

    Each yielded piece contains member data, so the first ``next()`` already
    proves the first object opens and decrypts.

    Raises (while iterating):
        IntegrityError: a member is tampered, truncated or does not match its checksum.
        KeyDestroyedError: a member's data key was destroyed.
    """
    spool = _Spool()
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        for member in members:
            with (
                open_member(member.stored) as source,
                archive.open(_member_info(member), "w") as out,
            ):
                while data := source.read(chunk):
                    out.write(data)
                    if spool.pending >= chunk:
                        yield spool.take()
    if spool.pending:
        yield spool.take()


def stream_object(
    stored: StoredObject, open_member: MemberOpener, *, chunk: int = CHUNK
) -> Iterator[bytes]:
    """The plaintext of one object, ``chunk`` bytes at a time, verified as it goes.

    The last piece is held back until the whole object matched its checksum,
    so a client never receives a complete body that failed verification.

    Raises (while iterating):
        IntegrityError: the object is tampered, truncated or does not match its checksum.
    """
    with open_member(stored) as source:
        held = source.read(chunk)
        while held:
            data = source.read(chunk)
            if not data:
                break
            yield held
            held = data
    if held:
        yield held
