"""The local provider's key file: its format, safe reading and atomic writing.

The file is JSON, mode 0600 in a directory the process owns::

    {
      "format": "dicom-vault-local-keys/2",
      "current": 2,
      "keks": {"1": "<base64 of 32 bytes>", "2": "<base64 of 32 bytes>"},
      "mac_root": "<base64 of 32 bytes>",
      "periods": {"2026-11": {"current": 3, "keys": {"3": "<base64 of 32 bytes>"}}}
    }

``keks`` holds every KEK version not yet destroyed; ``current`` is the highest
version ever created and is the one new wraps use. A version below
``current`` that is missing from ``keks`` was destroyed. ``mac_root`` is the
root from which per-purpose MAC keys are derived; it is never a KEK.
``periods`` holds the period keys (``docs/KEYS.md``) the same way, one entry
per month: its highest generation ever made and the generations not yet
destroyed (none, once the whole period was destroyed). Format ``/1`` files
(no ``periods``) are read as having none, and rewritten as ``/2``.

Writers hold an advisory lock on ``<file>.lock`` and replace the file
atomically (temporary file 0600 in the same directory, fsync, rename, fsync
of the directory), so readers never need the lock.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from crypto.errors import KeyProviderError

FORMAT = "dicom-vault-local-keys/2"
_READABLE_FORMATS = frozenset({"dicom-vault-local-keys/1", FORMAT})
KEY_BYTES = 32
_MAX_FILE_BYTES = 1024 * 1024
_GROUP_OR_OTHER = 0o077
_GROUP_OR_OTHER_WRITE = 0o022


@dataclass(frozen=True)
class PeriodKeys:
    """One period key: its highest generation ever made, and those not destroyed."""

    current: int
    keys: dict[int, bytes] = field(repr=False)


@dataclass
class KeyFile:
    """The decoded content of the key file. Never logged: repr shows versions only."""

    current: int
    keks: dict[int, bytes] = field(repr=False)
    mac_root: bytes = field(repr=False)
    periods: dict[str, PeriodKeys] = field(default_factory=dict, repr=False)

    @classmethod
    def fresh(cls) -> KeyFile:
        """A new key file content with KEK version 1 and a fresh MAC root."""
        return cls(
            current=1,
            keks={1: secrets.token_bytes(KEY_BYTES)},
            mac_root=secrets.token_bytes(KEY_BYTES),
        )

    def with_new_version(self) -> KeyFile:
        """A copy with one more KEK version, made current."""
        version = self.current + 1
        keks = {**self.keks, version: secrets.token_bytes(KEY_BYTES)}
        return KeyFile(current=version, keks=keks, mac_root=self.mac_root, periods=self.periods)

    def without_version(self, version: int) -> KeyFile:
        """A copy with KEK ``version`` removed."""
        keks = {v: k for v, k in self.keks.items() if v != version}
        return KeyFile(
            current=self.current, keks=keks, mac_root=self.mac_root, periods=self.periods
        )

    def with_period_generation(self, period: str) -> KeyFile:
        """A copy with the next generation of period key ``period``, made current."""
        before = self.periods.get(period, PeriodKeys(0, {}))
        generation = before.current + 1
        keys = {**before.keys, generation: secrets.token_bytes(KEY_BYTES)}
        return self._with_period(period, PeriodKeys(generation, keys))

    def retiring_period(self, period: str, keep: int | None) -> KeyFile:
        """A copy where period ``period`` keeps generation ``keep`` only (none if None)."""
        before = self.periods.get(period)
        if before is None:
            return self
        keys = {g: k for g, k in before.keys.items() if g == keep}
        return self._with_period(period, PeriodKeys(before.current, keys))

    def _with_period(self, period: str, keys: PeriodKeys) -> KeyFile:
        return KeyFile(
            current=self.current,
            keks=self.keks,
            mac_root=self.mac_root,
            periods={**self.periods, period: keys},
        )


def read_key_file(path: Path) -> tuple[KeyFile, tuple[int, int, int]]:
    """Read and check the key file; return it with its (inode, ctime, size) signature.

    Raises
    ------
    KeyProviderError
        The file is missing, not a regular file, accessible by group or
        others, too large or malformed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyProviderError("cannot open the local key file") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        _check_file_mode(info)
        raw = handle.read(_MAX_FILE_BYTES + 1)
    if len(raw) > _MAX_FILE_BYTES:
        raise KeyProviderError("the local key file is too large")
    return _decode(raw), signature(info)


def signature(info: os.stat_result) -> tuple[int, int, int]:
    """What tells that the file was replaced, changed or re-permissioned since it was read."""
    return (info.st_ino, info.st_ctime_ns, info.st_size)


def write_key_file(path: Path, content: KeyFile) -> None:
    """Replace the key file atomically with ``content`` (mode 0600)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_encode(content))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700 if missing; refuse one others can write.

    Raises
    ------
    KeyProviderError
        The directory exists and is writable by group or others.
    """
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)
        return
    if directory.stat().st_mode & _GROUP_OR_OTHER_WRITE:
        raise KeyProviderError("the key file directory is writable by group or others")


@contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """Hold the advisory lock that serialises writers of the key file at ``path``."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_file_mode(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyProviderError("the local key file is not a regular file")
    if info.st_mode & _GROUP_OR_OTHER:
        raise KeyProviderError(
            "the local key file is accessible by group or others; it must be mode 0600"
        )


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(content: KeyFile) -> bytes:
    document = {
        "format": FORMAT,
        "current": content.current,
        "keks": {str(v): _b64(k) for v, k in sorted(content.keks.items())},
        "mac_root": _b64(content.mac_root),
        "periods": {
            period: {
                "current": keys.current,
                "keys": {str(g): _b64(k) for g, k in sorted(keys.keys.items())},
            }
            for period, keys in sorted(content.periods.items())
        },
    }
    return json.dumps(document, indent=2).encode() + b"\n"


def _decode(raw: bytes) -> KeyFile:
    try:
        document = json.loads(raw)
        if document["format"] not in _READABLE_FORMATS:
            raise KeyProviderError("the local key file has an unknown format")
        current = _positive_int(document["current"])
        keks = {_positive_int(int(v)): _key(k) for v, k in document["keks"].items()}
        mac_root = _key(document["mac_root"])
        periods = {
            str(period): _period_keys(entry)
            for period, entry in document.get("periods", {}).items()
        }
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise KeyProviderError("the local key file is malformed") from exc
    if current not in keks or max(keks) != current:
        raise KeyProviderError("the local key file has no usable current KEK")
    return KeyFile(current=current, keks=keks, mac_root=mac_root, periods=periods)


def _period_keys(entry: dict[str, object]) -> PeriodKeys:
    current = _positive_int(entry["current"])
    keys = {_positive_int(int(g)): _key(k) for g, k in entry["keys"].items()}  # type: ignore[attr-defined]
    if any(generation > current for generation in keys):
        raise ValueError("a period generation above the current one")
    return PeriodKeys(current=current, keys=keys)


def _positive_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("not a positive integer")
    return value


def _key(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("not a string")
    material = base64.b64decode(text, validate=True)
    if len(material) != KEY_BYTES:
        raise ValueError("not a 256-bit key")
    return material


def _b64(material: bytes) -> str:
    return base64.b64encode(material).decode("ascii")
