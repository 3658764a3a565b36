"""The bridge from an async request body to the sync ingest code, in bounded memory.

The web server delivers a request body as async chunks on the event loop;
the ingest pipeline reads a blocking file object in a worker thread. A
:class:`BodyPipe` sits between them: :meth:`BodyPipe.fill` (a task on the
event loop) appends chunks to a small queue and pauses while more than
``high_water`` bytes wait; :meth:`BodyPipe.read` (the worker thread) takes
them out. Nothing is copied to disk and at most ``high_water`` plus one read
of plaintext is held, whatever the body's size.

A body that ends before its declared length (the client went away, or a
newer request for the same file interrupted this one) makes the reader raise
:class:`BodyCut`, never a clean end of file: a cut-off DICOM file must not be
mistaken for a truncated one, and whatever was being written from it is
aborted. Once the reader is done (finished or refused),
:meth:`BodyPipe.stop_reading` lets the rest of the body be read and dropped
(up to ``drain_max`` bytes) so that the client receives the answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator

import anyio
from starlette.requests import ClientDisconnect

from vault.errors import TooLarge, VaultError

HIGH_WATER = 4 * 1024 * 1024
DRAIN_MAX = 64 * 1024 * 1024


class BodyCut(Exception):
    """The request body ended before its declared length; nothing of it may be trusted."""


class BodyPipe:
    """One request body, from the event loop to a reading thread (see module docstring)."""

    def __init__(
        self,
        *,
        expected: int | None,
        limit: int,
        high_water: int = HIGH_WATER,
        start_at: int = HIGH_WATER,
        drain_max: int = DRAIN_MAX,
    ) -> None:
        self.expected = expected
        self._limit = limit
        self._high_water = high_water
        self._start_at = min(start_at, high_water)
        self._drain_max = drain_max
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._received = 0
        self._cond = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        self._discarding = False
        self._space: asyncio.Future[None] | None = None
        self._wanted = 0  # bytes the reader sleeps for (0: not sleeping)
        self._filled = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope: anyio.CancelScope | None = None

    # --- the reading side (a worker thread) ---------------------------------

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release here: the web layer owns the body (see stop_reading)."""

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the body (``b""`` after it).

        Raises:
            BodyCut: the body was cut off; TooLarge: it ran past its limit.
        """
        wanted = size if size is not None and size >= 0 else self._limit + 1
        taken: list[bytes] = []
        with self._cond:
            while wanted > 0:
                self._await_bytes(wanted)
                if self._error is not None:
                    raise self._error
                if not self._chunks:
                    break
                piece = self._take(wanted)
                taken.append(piece)
                wanted -= len(piece)
            self._wake_writer_if_drained()
        return taken[0] if len(taken) == 1 else b"".join(taken)

    def _await_bytes(self, wanted: int) -> None:
        """Sleep until ``wanted`` bytes are queued, the writer waits, or the body ended.

        Waking once per read instead of once per network chunk keeps thread
        switches (costly on a busy machine) to a few per file.
        """
        self._wanted = min(wanted, self._high_water)
        while self._buffered < self._wanted and not self._done and self._space is None:
            self._cond.wait()
        self._wanted = 0

    def _take(self, wanted: int) -> bytes:
        chunk = self._chunks[0]
        if len(chunk) <= wanted:
            self._chunks.popleft()
        else:
            self._chunks[0] = chunk[wanted:]
            chunk = chunk[:wanted]
        self._buffered -= len(chunk)
        return chunk

    def _wake_writer_if_drained(self) -> None:
        if self._space is not None and self._buffered <= self._high_water // 2:
            space, self._space = self._space, None
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, space)

    # --- the event loop side -------------------------------------------------

    @property
    def received(self) -> int:
        """Bytes of the body received so far."""
        return self._received

    async def filled(self) -> None:
        """Wait until ``start_at`` bytes are queued or the body ended.

        Starting the reader then spares it waiting on the network: a small
        file (most DICOM slices) is read in one go, with one thread switch.
        ``start_at`` is at most a held block, so that a body held in blocks
        is still written (and kept) block by block as it arrives.
        """
        await self._filled.wait()

    async def fill(self, chunks: AsyncIterator[bytes]) -> None:
        """Feed the body's chunks to the reader; returns when the body ended or was cut."""
        self._loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                await self._pump(chunks)
            except ClientDisconnect:
                self._fail(BodyCut("the connection closed before the body ended"))
            except VaultError as exc:  # the server's own body limit
                self._fail(exc)
            except BaseException:
                self._fail(BodyCut("the request was interrupted"))
                raise
        if scope.cancelled_caught:
            self._fail(BodyCut("a newer request for this file interrupted this one"))

    async def _pump(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            if not chunk:
                continue
            self._received += len(chunk)
            if self._discarding:
                if self._received > self._drain_max:
                    return
                continue
            if self._received > self._limit:
                self._fail(TooLarge("the request carries more bytes than the upload declared"))
                return
            space = self._push(chunk)
            if space is not None:
                await space
        self._end()

    def _push(self, chunk: bytes) -> asyncio.Future[None] | None:
        with self._cond:
            if self._discarding:
                return None
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            space = None
            if self._buffered >= self._start_at:
                self._filled.set()
            if self._buffered > self._high_water:
                assert self._loop is not None
                space = self._space = self._loop.create_future()
            if self._wanted and (self._buffered >= self._wanted or space is not None):
                self._cond.notify()
            return space

    def _end(self) -> None:
        if self.expected is not None and self._received < self.expected:
            self._fail(BodyCut("the body is shorter than its declared length"))
            return
        with self._cond:
            self._done = True
            self._cond.notify_all()
        self._filled.set()

    def _fail(self, error: BaseException) -> None:
        """End the body with ``error``, unless it already ended (a whole body stays whole)."""
        with self._cond:
            if self._done:
                return
            self._error = error
            self._done = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()
            space, self._space = self._space, None
        if space is not None and not space.done():
            space.set_result(None)
        self._filled.set()

    def interrupt(self) -> None:
        """Cut this body off now (called on the event loop by a newer request).

        A body already received whole is left alone: its processing does not
        depend on the network and finishes on its own.
        """
        if self._done:
            return
        self._fail(BodyCut("a newer request for this file interrupted this one"))
        if self._scope is not None:
            self._scope.cancel()

    def stop_reading(self) -> None:
        """The reader is done: drop what is queued and what still arrives."""
        with self._cond:
            self._discarding = True
            self._chunks.clear()
            self._buffered = 0
            space, self._space = self._space, None
        if space is not None and not space.done():
            space.set_result(None)
        self._filled.set()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
