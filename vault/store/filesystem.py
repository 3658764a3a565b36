"""The filesystem object store: one file per object under a root directory.

The embedded default. An object ``obj/3f/3fa9...`` is the file
``<root>/obj/3f/3fa9...``. A writer writes a temporary file (random hidden
name, mode 0600) in the object's own directory, and on commit flushes and
fsyncs it, renames it into place atomically and fsyncs the directory, so an
object is either absent or whole, even across a crash. Aborting, an exception
in the ``with`` body, or the garbage collection of an uncommitted writer
removes the temporary file. Directories are created mode 0700 (the 256
``obj/xx`` fan-out directories of random keys all at the first write, with one
directory fsync) and remembered once checked, so a write costs no stat,
mkdir or realpath for them. Object contents and keys are never logged.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vault.errors import NotFound, StorageUnavailable
from vault.store._keys import checked_key
from vault.store._writer_state import ABORTED, COMMITTED, OPEN, WriterLifecycle
from vault.store.base import OBJECT_KEY_PREFIX, new_object_key

TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o600
DIR_MODE = 0o700


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(file: BinaryIO, temp_path: Path) -> None:
    """Close and remove a temporary file (also run by the garbage collector)."""
    with contextlib.suppress(OSError):  # the bytes are thrown away; only the unlink matters
        file.close()
    temp_path.unlink(missing_ok=True)


def _remove_if_older(path: Path, cutoff: float) -> int:
    """Remove ``path`` if last modified before ``cutoff``; 1 if removed, else 0."""
    try:
        if path.stat().st_mtime >= cutoff:
            return 0
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


class FilesystemObjectWriter(WriterLifecycle):
    """Writes one object to a temporary file and renames it into place on commit."""

    def __init__(self, key: str, final_path: Path) -> None:
        self.key = key
        self._final_path = final_path
        self._temp_path = final_path.parent / f"{TEMP_PREFIX}{secrets.token_hex(12)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self._temp_path, flags, FILE_MODE)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._finalizer = weakref.finalize(self, _discard, self._file, self._temp_path)
        self._state = OPEN

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; returns its length.

        Raises
        ------
        ValueError
            The writer was already committed or aborted.
        StorageUnavailable
            The disk refused the bytes (full, read-only...); the writer is aborted.
        """
        self._require_open()
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise StorageUnavailable("the object could not be written") from exc
        return memoryview(data).nbytes

    def commit(self) -> None:
        """Make the object durable, then visible under its key.

        Raises
        ------
        StorageUnavailable
            Flushing, syncing or renaming failed; nothing is left behind.
        """
        self._require_open()
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp_path, self._final_path)
        except OSError as exc:
            self.abort()
            raise StorageUnavailable("the object could not be stored durably") from exc
        self._finalizer.detach()
        self._state = COMMITTED
        try:
            _fsync_directory(self._final_path.parent)
        except OSError as exc:
            self._final_path.unlink(missing_ok=True)
            raise StorageUnavailable("the object could not be stored durably") from exc

    def abort(self) -> None:
        """Discard the temporary file. Does nothing once committed or aborted."""
        if self._state == OPEN:
            self._state = ABORTED
            self._finalizer()


class FilesystemObjectStore:
    """Objects as files under ``root``.

    Parameters
    ----------
    root:
        The directory holding the objects; created (mode 0700) if missing.
    """

    kind = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._resolved_root = self.root.resolve()
        # Directories already checked to exist inside the root (a write
        # needs no stat, mkdir or realpath for them again).
        self._known_dirs: set[str] = set()

    def open_writer(self, key: str | None = None) -> FilesystemObjectWriter:
        """A writer for a new object under ``key`` (a fresh random key if None).

        An existing object under the same key is replaced on commit.
        """
        key = new_object_key() if key is None else checked_key(key)
        parent = key.rpartition("/")[0]
        try:
            if parent in self._known_dirs:
                try:
                    return FilesystemObjectWriter(key, self.root / key)
                except FileNotFoundError:  # removed behind our back: check it again
                    self._known_dirs.discard(parent)
            final_path = self._path(key)
            if parent.startswith(OBJECT_KEY_PREFIX):
                self._make_fanout()
            self._make_parents(final_path)
            writer = FilesystemObjectWriter(key, final_path)
        except OSError as exc:
            raise StorageUnavailable("the object store could not create an object") from exc
        self._known_dirs.add(parent)
        return writer

    def _make_fanout(self) -> None:
        """Create the 256 ``obj/xx`` directories of random keys at once, with
        one directory fsync, instead of one mkdir and fsync per new prefix."""
        base = self.root / OBJECT_KEY_PREFIX.rstrip("/")
        names = [f"{n:02x}" for n in range(256)]
        if all(f"{OBJECT_KEY_PREFIX}{name}" in self._known_dirs for name in names):
            return
        if not base.resolve().is_relative_to(self._resolved_root):
            return
        self._make_parents(base / "00" / "x")
        created, plain = False, []
        for name in names:
            try:
                (base / name).mkdir(mode=DIR_MODE)
                created = True
            except FileExistsError:
                if not stat.S_ISDIR((base / name).lstat().st_mode):
                    continue  # a symlink or file: left to the per-key checks
            plain.append(name)
        if created:
            _fsync_directory(base)
        self._known_dirs.update(f"{OBJECT_KEY_PREFIX}{name}" for name in plain)

    def open_reader(self, key: str) -> BinaryIO:
        """The object as a buffered binary file. Raises :class:`NotFound`."""
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound("no such object") from exc
        except OSError as exc:
            raise StorageUnavailable("the object could not be read") from exc

    def size(self, key: str) -> int:
        """The object's length in bytes. Raises :class:`NotFound`."""
        try:
            status = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound("no such object") from exc
        if not stat.S_ISREG(status.st_mode):
            raise NotFound("no such object")
        return status.st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageUnavailable("the object could not be deleted") from exc

    def iter_keys(self) -> Iterator[str]:
        """Every committed object's key (temporary files are not objects)."""
        for directory, _subdirs, files in os.walk(self.root):
            base = Path(directory).relative_to(self.root)
            for name in files:
                if not name.startswith("."):
                    yield (base / name).as_posix()

    def remove_stale_temp_files(self, *, older_than_seconds: float = 86_400.0) -> int:
        """Remove temporary files left by a crashed process; returns how many.

        Only files not modified for ``older_than_seconds`` are removed, so a
        writer still at work in another process is left alone.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        for directory, _subdirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    removed += _remove_if_older(Path(directory) / name, cutoff)
        return removed

    def _path(self, key: str) -> Path:
        path = self.root / checked_key(key)
        if not path.resolve().is_relative_to(self._resolved_root):
            raise ValueError("object key refused: it leads outside the store")
        return path

    def _make_parents(self, final_path: Path) -> None:
        """Create the missing directories between root and the object (0700)."""
        missing: list[Path] = []
        directory = final_path.parent
        while directory != self.root and not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            _fsync_directory(directory.parent)
