"""The object-store interface: where encrypted objects live.

Object keys are random identifiers made by :func:`new_object_key`; they carry
no UID, name or date. A write goes through an :class:`ObjectWriter` that
either commits the whole object or leaves nothing behind: used as a context
manager it commits on normal exit and aborts on an exception.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

OBJECT_KEY_PREFIX = "obj/"


def new_object_key() -> str:
    """A fresh random object key, e.g. ``obj/3f/3fa9...`` (no meaning in it)."""
    token = secrets.token_hex(16)
    return f"{OBJECT_KEY_PREFIX}{token[:2]}/{token}"


class ObjectWriter(Protocol):
    """A write-once sink for one object."""

    key: str

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def commit(self) -> None:
        """Make the object durable and visible. Nothing is visible before."""
        ...

    def abort(self) -> None:
        """Discard everything written; no object, no partial file, remains."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class ObjectStore(Protocol):
    """Stores opaque (already encrypted) objects under random keys."""

    kind: str

    def open_writer(self, key: str | None = None) -> ObjectWriter:
        """A writer for a new object under ``key`` (a fresh random key if None)."""
        ...

    def open_reader(self, key: str) -> BinaryIO:
        """A readable stream of the object. Raises ``vault.errors.NotFound``."""
        ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def iter_keys(self) -> Iterator[str]:
        """Every object key in the store."""
        ...
