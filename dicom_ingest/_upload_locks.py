"""One request at a time per uploaded file, the newest one winning.

A tus client that lost its connection retries (HEAD, then PATCH) while the
server may still be reading the old request, stuck on a half-open socket.
As tusd does, a new request for a file asks the request holding it to stop
(its body is cut off: the blocks it held stay, the rest is dropped) and then
waits for it to finish, so retries are never blocked by their own dead
predecessors and two requests never write one file at once.

The locks live in one process's event loop; across processes (several API
workers) the catalog's offset checks keep writes consistent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    interrupt: Callable[[], None] | None = None


class FileLocks:
    """The per-file request locks of one process (see module docstring)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    @asynccontextmanager
    async def hold(
        self, file_id: str, interrupt: Callable[[], None] | None = None
    ) -> AsyncIterator[None]:
        """Hold ``file_id``; ``interrupt`` is how a later request may stop this one."""
        slot = self._slots.setdefault(file_id, _Slot())
        slot.users += 1
        try:
            if slot.lock.locked() and slot.interrupt is not None:
                slot.interrupt()
            async with slot.lock:
                slot.interrupt = interrupt
                try:
                    yield
                finally:
                    slot.interrupt = None
        finally:
            slot.users -= 1
            if not slot.users:
                self._slots.pop(file_id, None)

    def held(self) -> int:
        """How many files have a request holding or waiting for them."""
        return len(self._slots)
