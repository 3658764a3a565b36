"""Uploaded ZIP archives: the archive checks of :mod:`dicom_ingest.sources`, then each entry.

:func:`ingest_archive` opens a complete archive (a seekable stream over its
encrypted held parts), refuses it whole when it is unsafe (absolute or ``..``
entry paths, too many entries, a compression ratio or expanded size over the
limits, a DICOMDIR pointing outside it), then hands every entry but DICOMDIR
files, folders and OS junk to the ingest callable one by one, straight from
the decompressor: nothing is extracted to disk. An entry that is refused
(by the pipeline, or because it is damaged or encrypted) is noted with its
index in the archive and the reason; the others go on.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from dicom_ingest.pipeline import IngestResult
from dicom_ingest.sources import ZipLimits, check_archive_dicomdirs, check_zip, is_junk
from vault.errors import InvalidInput, VaultError

# What zipfile and zlib raise on a damaged, encrypted or unsupported entry.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError)


@dataclass(frozen=True)
class EntryRefusal:
    entry: int | None
    error: str
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"entry": self.entry, "error": self.error, "detail": self.detail}


@dataclass
class ArchiveOutcome:
    """What became of an archive's entries."""

    results: list[IngestResult] = field(default_factory=list)
    refused: list[EntryRefusal] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(1 for result in self.results if not result.duplicate)

    @property
    def duplicates(self) -> int:
        return sum(1 for result in self.results if result.duplicate)


class _Entry(io.RawIOBase):
    """An entry's decompressed bytes; damage surfaces as a refusal, not a crash."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._raw.read(-1 if size is None else size)
        except _DAMAGED as exc:
            raise _damaged() from exc

    def close(self) -> None:
        self._raw.close()
        super().close()


def _damaged() -> InvalidInput:
    return InvalidInput("the archive entry is damaged or encrypted", reason="damaged-entry")


def open_archive(view: BinaryIO, limits: ZipLimits) -> zipfile.ZipFile:
    """The archive in ``view``, checked whole before any entry is read.

    Raises:
        InvalidInput: not a ZIP archive; UnsafeArchive, TooLarge: refused whole.
    """
    try:
        archive = zipfile.ZipFile(view)
    except _DAMAGED as exc:
        raise InvalidInput("this file is not a readable ZIP archive", reason="not-zip") from exc
    try:
        check_zip(archive, **limits.as_kwargs())
        check_archive_dicomdirs(archive)
    except _DAMAGED as exc:
        archive.close()
        raise _damaged() from exc
    except BaseException:
        archive.close()
        raise
    return archive


def ingest_archive(
    view: BinaryIO, limits: ZipLimits, ingest: Callable[[BinaryIO], IngestResult]
) -> ArchiveOutcome:
    """Check the archive in ``view``, then ``ingest`` each entry (see module docstring).

    Raises:
        VaultError: the archive was refused whole; nothing of it was stored.
    """
    outcome = ArchiveOutcome()
    with open_archive(view, limits) as archive:
        for index, member in enumerate(archive.infolist()):
            if member.is_dir() or is_junk(member.filename):
                continue
            try:
                outcome.results.append(_ingest_entry(archive, member, ingest))
            except VaultError as exc:
                outcome.refused.append(EntryRefusal(index, exc.reason, str(exc)))
    return outcome


def _ingest_entry(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    ingest: Callable[[BinaryIO], IngestResult],
) -> IngestResult:
    try:
        raw = archive.open(member)
    except _DAMAGED as exc:
        raise _damaged() from exc
    with _Entry(raw) as entry:  # type: ignore[arg-type]
        return ingest(entry)  # type: ignore[arg-type]
