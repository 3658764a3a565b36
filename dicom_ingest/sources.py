"""Turning what a sender hands over (files, folders, ZIP archives) into instances.

:func:`iter_sources` walks paths and yields one :class:`SourceItem` per
candidate file, each opened lazily as a stream. Folders are walked
recursively (a CD's DICOMDIR tree included); ZIP archives are read entry by
entry without extracting anything to disk. DICOMDIR index files and operating
system junk are skipped quietly. Unsafe archives are refused: entries with
absolute or ``..`` paths, and ZIP bombs (too many entries, a compression
ratio or total size over the limits), and DICOMDIR files whose records point
outside the archive (:func:`check_dicomdir`, also usable on a lone stream).
"""

from __future__ import annotations

import io
import posixpath
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from vault.errors import TooLarge, UnsafeArchive, VaultError

JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "dicomdir", "autorun.inf"})
JUNK_PREFIXES = ("._", "__macosx")
# Media Storage Directory Storage: the SOP class of a DICOMDIR (PS3.10 Section 8.6).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_META_SOP_CLASS = b"\x02\x00\x02\x00UI"  # (0002,0002) in explicit VR little endian
DICOMDIR_MAX_BYTES = 64 * 1024 * 1024


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


def is_dicomdir_name(name: str) -> bool:
    """True when ``name`` (a path inside an archive or a folder) names a DICOMDIR index."""
    return PurePosixPath(name.replace("\\", "/")).name.lower() == "dicomdir"


def looks_like_dicomdir(leading: bytes) -> bool:
    """True when the Part 10 file meta at the start of ``leading`` names a DICOMDIR.

    ``leading`` is the first few hundred bytes of a file; only its file meta
    group is looked at, so a DICOMDIR sent without its name is still known.
    """
    meta = leading[132:1024]
    position = meta.find(_META_SOP_CLASS)
    if leading[128:132] != b"DICM" or position < 0 or position + 8 > len(meta):
        return False
    (length,) = struct.unpack_from("<H", meta, position + 6)
    value = meta[position + 8 : position + 8 + length]
    return value.rstrip(b"\x00 ") == DICOMDIR_SOP_CLASS.encode()


_UNREADABLE = (
    InvalidDicomError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    NotImplementedError,
    struct.error,
    OverflowError,
)


def _referenced_paths(data: bytes) -> list[list[str]]:
    """The Referenced File IDs of a DICOMDIR's records; none if it cannot be read."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        records = dataset.get("DirectoryRecordSequence") or []
        found = [record.get("ReferencedFileID") for record in records]
    except _UNREADABLE:
        return []
    return [[ref] if isinstance(ref, str) else [str(part) for part in ref] for ref in found if ref]


def check_dicomdir(
    stream: BinaryIO, *, folder: str = "", max_bytes: int = DICOMDIR_MAX_BYTES
) -> None:
    """Refuse a DICOMDIR whose records point outside the folder tree it indexes.

    ``folder`` is where the DICOMDIR sits inside its archive ("" at the top).
    A file that is not a readable DICOMDIR points nowhere and passes.

    Raises:
        UnsafeArchive: a record names an absolute path or climbs above the top.
        TooLarge: the DICOMDIR is over ``max_bytes``.
    """
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLarge("the DICOMDIR is larger than this service accepts")
    for parts in _referenced_paths(data):
        joined = "/".join(part.replace("\\", "/") for part in parts)
        path = posixpath.normpath(posixpath.join(folder, joined))
        if joined.startswith("/") or ":" in joined or path == ".." or path.startswith("../"):
            raise UnsafeArchive("the DICOMDIR points at files outside the archive")


def check_archive_dicomdirs(archive: zipfile.ZipFile) -> None:
    """Refuse an archive holding a DICOMDIR whose records point outside the archive."""
    for member in archive.infolist():
        if not member.is_dir() and is_dicomdir_name(member.filename):
            folder = posixpath.dirname(member.filename.replace("\\", "/"))
            with archive.open(member) as stream:
                check_dicomdir(stream, folder=folder)  # type: ignore[arg-type]


def _zip_items(path: Path, label: str, limits: ZipLimits) -> Iterator[SourceItem]:
    archive = zipfile.ZipFile(path)
    try:
        check_zip(archive, **limits.as_kwargs())
        check_archive_dicomdirs(archive)
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
