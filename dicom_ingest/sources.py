"""Turning what a sender hands over (files, folders, ZIP archives) into instances.

:func:`iter_sources` walks paths and yields one :class:`SourceItem` per
candidate file, each opened lazily as a stream. Folders are walked
recursively (a CD's DICOMDIR tree included); ZIP archives are read entry by
entry without extracting anything to disk. DICOMDIR index files and operating
system junk are skipped quietly. Unsafe archives are refused: entries with
absolute or ``..`` paths, and ZIP bombs (too many entries, a compression
ratio or total size over the limits).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from vault.errors import TooLarge, UnsafeArchive, VaultError

JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "dicomdir", "autorun.inf"})
JUNK_PREFIXES = ("._", "__macosx")


@dataclass(frozen=True)
class SourceItem:
    """One candidate file: a display name for its sender and a way to open it."""

    name: str
    open: Callable[[], BinaryIO]
    error: VaultError | None = None


def is_junk(name: str) -> bool:
    """True for files a sender never means to send (DICOMDIR index, OS leftovers)."""
    parts = [p.lower() for p in PurePosixPath(name.replace("\\", "/")).parts]
    if not parts:
        return True
    return parts[-1] in JUNK_NAMES or any(p.startswith(JUNK_PREFIXES) for p in parts)


def check_member_name(name: str) -> None:
    """Refuse an archive member whose path is absolute or climbs out with ``..``."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if path.is_absolute() or ".." in path.parts or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnsafeArchive("the archive has an entry with an absolute or '..' path")


def check_zip(
    archive: zipfile.ZipFile, *, max_ratio: int, max_total: int, max_entries: int
) -> None:
    """Refuse a ZIP bomb or a path-escaping archive before reading any entry."""
    members = archive.infolist()
    if len(members) > max_entries:
        raise UnsafeArchive("the archive has too many entries")
    total = 0
    for member in members:
        check_member_name(member.filename)
        total += member.file_size
        if member.compress_size and member.file_size / member.compress_size > max_ratio:
            raise UnsafeArchive("the archive is compressed beyond a safe ratio (a ZIP bomb?)")
    if total > max_total:
        raise TooLarge("the archive expands beyond the size this service accepts")


def _zip_items(path: Path, label: str, limits: ZipLimits) -> Iterator[SourceItem]:
    archive = zipfile.ZipFile(path)
    try:
        check_zip(archive, **limits.as_kwargs())
    except VaultError as exc:
        archive.close()
        yield SourceItem(label, _refused, exc)
        return
    with archive:
        for member in archive.infolist():
            if member.is_dir() or is_junk(member.filename):
                continue
            yield SourceItem(f"{label}!{member.filename}", _opener(archive, member))


def _opener(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    return lambda: archive.open(member)  # type: ignore[return-value]


def _refused() -> BinaryIO:
    raise RuntimeError("a refused source is never opened")


@dataclass(frozen=True)
class ZipLimits:
    max_ratio: int
    max_total: int
    max_entries: int

    def as_kwargs(self) -> dict[str, int]:
        return {
            "max_ratio": self.max_ratio,
            "max_total": self.max_total,
            "max_entries": self.max_entries,
        }


def _file_items(path: Path, label: str, limits: ZipLimits) -> Iterator[SourceItem]:
    if is_junk(path.name):
        return
    if zipfile.is_zipfile(path):
        yield from _zip_items(path, label, limits)
        return
    yield SourceItem(label, lambda: path.open("rb"))


def iter_sources(paths: list[Path], limits: ZipLimits) -> Iterator[SourceItem]:
    """Every candidate file under ``paths``, in a stable order."""
    for root in paths:
        if root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                yield from _file_items(path, str(path), limits)
        else:
            yield from _file_items(root, str(root), limits)
