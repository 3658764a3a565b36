"""Holding the bytes of a file that arrives in several requests: encrypted, in blocks.

Each file gets its own spool data key the first time it needs one (made by
the keyring and persisted wrapped in the catalog, so it survives a restart).
:func:`hold_blocks` cuts a request body into blocks of at most
``uploads.block_bytes``, writes each with :func:`vault.objects.write_encrypted`
and records it as an :class:`UploadPart` at its offset in the same step that
advances the file's offset; a block cut off mid-way is aborted by the object
writer and never recorded, so the offset stays at the last whole block.

Held bytes are read back in order by :func:`held_openers` (each part through
:func:`vault.objects.open_decrypted`, which verifies it), or at random by
:class:`HeldView` for ZIP archives: it decrypts at most one block to reach any
position. :func:`drop_held` crypto-shreds the spool key, then deletes the
parts. Plaintext is never written to disk.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import delete, select, update

from crypto.keys import DataKey
from vault.catalog.uploads import Upload, UploadFile, UploadPart
from vault.core import Vault
from vault.errors import OffsetMismatch, TooLarge
from vault.objects import CHUNK, StoredObject, open_decrypted, write_encrypted

Opener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class HeldPart:
    offset: int
    stored: StoredObject

    @property
    def end(self) -> int:
        return self.offset + self.stored.size


def spool_key(vault: Vault, file_id: str) -> DataKey:
    """The file's spool data key, made and recorded (wrapped) on first use."""
    with vault.catalog.read_session() as session:
        key_id = session.scalar(select(UploadFile.spool_key_id).where(UploadFile.id == file_id))
    if key_id:
        return vault.keyring.data_key(key_id)
    pending = vault.keyring.generate()
    with vault.catalog.session() as session:
        claimed = session.execute(
            update(UploadFile)
            .where(UploadFile.id == file_id, UploadFile.spool_key_id.is_(None))
            .values(spool_key_id=pending.key.key_id)
        )
        if claimed.rowcount:  # type: ignore[attr-defined]
            vault.keyring.persist(session, pending)
            return pending.key
    return spool_key(vault, file_id)  # another request made it first


class _Bounded(io.RawIOBase):
    """At most ``count`` bytes of ``source``."""

    def __init__(self, source: BinaryIO, count: int) -> None:
        super().__init__()
        self._source = source
        self._left = count

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        data = self._source.read(wanted) if wanted else b""
        self._left -= len(data)
        return data


def hold_blocks(
    vault: Vault, file_id: str, body: BinaryIO, *, start: int, limit: int, block_bytes: int
) -> int:
    """Hold ``body`` (at most ``limit`` bytes) from offset ``start``; the new offset.

    Raises:
        TooLarge: the body has more than ``limit`` bytes (the blocks before stay).
        OffsetMismatch: another request moved the file's offset meanwhile.
        BodyCut: the body was cut off (the blocks before it stay held).
    """
    offset, end = start, start + limit
    key: DataKey | None = None
    while offset < end:
        take = min(block_bytes, end - offset)
        first = body.read(min(CHUNK, take))
        if not first:
            return offset
        key = key or spool_key(vault, file_id)
        rest = _Bounded(body, take - len(first))
        stored = write_encrypted(vault.store, key, rest, prefix=first, limit=take)  # type: ignore[arg-type]
        _record_part(vault, file_id, offset, stored)
        offset += stored.size
    if body.read(1):
        raise TooLarge("the request carries more bytes than the upload declared")
    return offset


def _record_part(vault: Vault, file_id: str, offset: int, stored: StoredObject) -> None:
    """Record a held block and advance the file's offset past it, or drop the block."""
    now = vault.clock.now()
    try:
        with vault.catalog.session() as session:
            moved = session.execute(
                update(UploadFile)
                .where(
                    UploadFile.id == file_id,
                    UploadFile.offset == offset,
                    UploadFile.state == "receiving",
                )
                .values(offset=offset + stored.size, updated_at=now)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                raise OffsetMismatch("another request for this file moved its offset")
            session.add(
                UploadPart(
                    file_id=file_id,
                    offset=offset,
                    size=stored.size,
                    object_key=stored.object_key,
                    sha256=stored.sha256,
                )
            )
            upload_id = select(UploadFile.upload_id).where(UploadFile.id == file_id)
            session.execute(
                update(Upload)
                .where(Upload.id == upload_id.scalar_subquery())
                .values(updated_at=now)
            )
    except BaseException:
        vault.store.delete(stored.object_key)
        raise


def held_parts(vault: Vault, file_id: str) -> list[HeldPart]:
    """The file's held parts in order of offset."""
    with vault.catalog.read_session() as session:
        key_id = session.scalar(select(UploadFile.spool_key_id).where(UploadFile.id == file_id))
        rows = session.scalars(
            select(UploadPart).where(UploadPart.file_id == file_id).order_by(UploadPart.offset)
        ).all()
    return [
        HeldPart(row.offset, StoredObject(row.object_key, key_id or "", row.sha256, row.size))
        for row in rows
    ]


def held_openers(vault: Vault, parts: list[HeldPart]) -> Iterator[Opener]:
    """Openers of the parts' verified plaintext, in order (the key fetched once)."""
    if not parts:
        return
    key = vault.keyring.data_key(parts[0].stored.key_id)
    for part in parts:
        yield lambda part=part: open_decrypted(vault.store, key, part.stored)


class JoinedReader(io.RawIOBase):
    """The streams of ``openers`` one after the other; ``read(n)`` fills ``n`` unless at the end."""

    def __init__(self, openers: Iterable[Opener]) -> None:
        super().__init__()
        self._openers = iter(openers)
        self._current: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = size if size is not None and size >= 0 else 1 << 62
        parts: list[bytes] = []
        while wanted > 0:
            current = self._current or self._next()
            if current is None:
                break
            data = current.read(min(wanted, 1 << 30))
            if not data:
                current.close()
                self._current = None
                continue
            parts.append(data)
            wanted -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _next(self) -> BinaryIO | None:
        opener = next(self._openers, None)
        self._current = opener() if opener is not None else None
        return self._current

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


class HeldView(io.RawIOBase):
    """Seekable plaintext of a file's held parts (for ZIP archives, which need seeking).

    Reaching a position opens the part holding it and skips forward inside
    it: at most one block (``uploads.block_bytes``) is decrypted to get there.
    """

    def __init__(self, vault: Vault, parts: list[HeldPart]) -> None:
        super().__init__()
        self._openers = list(held_openers(vault, parts))
        self._parts = parts
        self._starts = [part.offset for part in parts]
        self._length = parts[-1].end if parts else 0
        self._position = 0
        self._open: tuple[int, BinaryIO] | None = None
        self._open_at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._position >= self._length or not len(buffer):
            return 0
        index = bisect.bisect_right(self._starts, self._position) - 1
        part = self._parts[index]
        stream = self._stream_at(index, self._position - part.offset)
        data = stream.read(min(len(buffer), part.end - self._position))
        if not data:
            raise OSError("a held part ended before its recorded size")
        buffer[: len(data)] = data
        self._position += len(data)
        self._open_at += len(data)
        return len(data)

    def _stream_at(self, index: int, within: int) -> BinaryIO:
        if self._open is None or self._open[0] != index or self._open_at > within:
            self._close_open()
            self._open, self._open_at = (index, self._openers[index]()), 0
        stream = self._open[1]
        while self._open_at < within:
            skipped = stream.read(min(CHUNK, within - self._open_at))
            if not skipped:
                raise OSError("a held part ended before its recorded size")
            self._open_at += len(skipped)
        return stream

    def _close_open(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_open()
        super().close()


def drop_held(vault: Vault, file_ids: list[str]) -> None:
    """Crypto-shred the files' spool keys, then delete their held parts."""
    if not file_ids:
        return
    with vault.catalog.session() as session:
        object_keys = list(
            session.scalars(select(UploadPart.object_key).where(UploadPart.file_id.in_(file_ids)))
        )
        key_ids = [
            key_id
            for key_id in session.scalars(
                select(UploadFile.spool_key_id).where(UploadFile.id.in_(file_ids))
            )
            if key_id
        ]
        session.execute(delete(UploadPart).where(UploadPart.file_id.in_(file_ids)))
        session.execute(
            update(UploadFile).where(UploadFile.id.in_(file_ids)).values(spool_key_id=None)
        )
        for key_id in key_ids:
            vault.keyring.destroy(key_id, session=session)
    for object_key in object_keys:
        vault.store.delete(object_key)
