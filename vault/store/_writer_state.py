"""The life of an object writer, shared by the stores' writers: open, then committed or aborted.

A writer is a context manager: leaving the ``with`` block by an exception
aborts it, leaving it normally while still open commits it. Writing or
committing after the end is a programming error (``ValueError``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

OPEN, COMMITTED, ABORTED = "open", "committed", "aborted"


class WriterLifecycle(ABC):
    """``with`` handling and the open-state check; subclasses set ``_state``."""

    _state: str

    @abstractmethod
    def commit(self) -> None:
        """Make the object visible under its key."""

    @abstractmethod
    def abort(self) -> None:
        """Discard what was written; does nothing once committed or aborted."""

    def _require_open(self) -> None:
        if self._state != OPEN:
            raise ValueError(f"object writer already {self._state}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == OPEN:
            self.commit()
